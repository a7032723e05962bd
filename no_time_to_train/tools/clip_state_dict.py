"""Turn one of OpenAI's CLIP TorchScript archives into the plain state dict the configs read.

    python -m no_time_to_train.tools.clip_state_dict ViT-B-32.pt checkpoints/clip/ViT-B-32.state_dict.pt

OpenAI distributes CLIP as TorchScript archives (``ViT-B-32.pt``, ...), fp16 on disk; the
reference's configs (``new_exps/clip/*.yaml``) read ``ViT-*.state_dict.pt``, the archive's
``state_dict()`` in float32 (what ``clip.load(..., device="cpu")`` holds). Loading a TorchScript
archive runs no Python code of its own, but only convert files from a source you trust.
"""

from __future__ import annotations

import argparse
import sys

import torch

from no_time_to_train.io_utils import atomic_open


def convert(archive: str, out: str) -> int:
    """Write the float32 state dict of ``archive`` to ``out`` (atomically); returns the tensor count."""
    model = torch.jit.load(archive, map_location="cpu")
    state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with atomic_open(out, "wb") as f:
        torch.save(state, f)
    return len(state)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("archive", help="OpenAI's TorchScript file, e.g. ViT-B-32.pt")
    p.add_argument("out", help="where to write the state dict, e.g. checkpoints/clip/ViT-B-32.state_dict.pt")
    args = p.parse_args(argv)
    try:
        n = convert(args.archive, args.out)
    except (RuntimeError, OSError, ValueError) as err:
        print(f"error: {args.archive} is not a readable TorchScript archive ({err}).", file=sys.stderr)
        return 2
    print(f"{args.out}: {n} tensors (float32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
