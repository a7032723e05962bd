"""Random-weight stand-ins for Meta's checkpoints, written in Meta's own file formats.

Real weights cannot be downloaded everywhere (CI, air-gapped machines). These writers build the
real architectures with random weights and save them exactly the way Meta's files are laid out,
so that loading them goes through the same code as the real files:

* SAM2: ``{"model": state_dict}`` of ``SAM2Base`` (like ``sam2_hiera_large.pt``).
* Encoders (DINOv2, DINOv3, CLIP, PE): a random timm model of the official architecture, its
  weights renamed to the official file's layout by its family's ``to_official``
  (``no_time_to_train.encoders``); timm's checkpoint filter undoes exactly this when the file is
  loaded.

The outputs of such models are meaningless: use them for smoke tests and timing only.

Command line::

    python -m no_time_to_train.tools.random_checkpoints --random-weights [--small] [--no-large]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from no_time_to_train.checkpoints.loading import build_sam2
from no_time_to_train.checkpoints.registry import SAM2_CHECKPOINT_FILES, resolve_sam2_config
from no_time_to_train.io_utils import atomic_open

__all__ = [
    "main",
    "random_encoder",
    "random_timm_vit",
    "write_random_encoder_checkpoint",
    "write_random_sam2_checkpoint",
]

# Range of the random LayerScale gammas. timm initialises them to 1e-5, which makes every block
# an identity to within float precision: a converter that scrambled block weights would go
# unnoticed. Gammas of this size let every block change the output.
_LAYER_SCALE_RANGE = (0.1, 0.5)


def _save(obj: object, path: str | os.PathLike) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    # the temporary file behind the atomic write is private (0600); give it the usual mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_random_sam2_checkpoint(cfg_file: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write ``{"model": state_dict}`` of a randomly initialised SAM2 for ``cfg_file``.

    The architecture is the official one built from the sam2 package config, so the file loads
    strictly with :func:`~no_time_to_train.checkpoints.loading.build_sam2` and the same config.
    """
    torch.manual_seed(seed)
    model = build_sam2(cfg_file, None, device="cpu")
    _save({"model": model.state_dict()}, path)
    return Path(path)


def random_timm_vit(timm_name: str, seed: int, draw_biases: bool) -> nn.Module:
    """timm's random initialisation with every LayerScale gamma drawn from ``_LAYER_SCALE_RANGE``
    and, with ``draw_biases``, every non-norm bias from N(0, 0.02) (except a head's: timm
    initialises biases to zero, which would hide a converter that dropped them)."""
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model(timm_name, pretrained=False)
    generator = torch.Generator().manual_seed(seed)
    low, high = _LAYER_SCALE_RANGE
    with torch.no_grad():
        for param_name, param in vit.named_parameters():
            if param_name.endswith((".gamma", "gamma_1", "gamma_2")):
                param.uniform_(low, high, generator=generator)
            elif (
                draw_biases
                and param_name.endswith("bias")
                and "norm" not in param_name
                and not param_name.startswith("head.")
            ):
                param.normal_(0.0, 0.02, generator=generator)
    return vit.eval()


def random_encoder(name: str, seed: int = 0) -> nn.Module:
    """The seeded random-weight timm model of encoder ``name`` (any family of
    ``no_time_to_train.encoders``) that :func:`write_random_encoder_checkpoint` writes."""
    from no_time_to_train.encoders import family_of

    return family_of(name).random(name, seed)


def write_random_encoder_checkpoint(name: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write :func:`random_encoder` ``(name, seed)`` in its official file's layout (the family's
    ``to_official``), so that it loads through the same code as the real file."""
    from no_time_to_train.encoders import to_official

    _save(to_official(name, random_encoder(name, seed).state_dict()), path)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

# (kind, model name, path under the checkpoints folder); the paths are the ones the configs use.
_LARGE_SET = [
    ("sam2", "sam2_hiera_l.yaml", "sam2_hiera_large.pt"),
    ("encoder", "dinov2_large", "dinov2/dinov2_vitl14_pretrain.pth"),
]
_SMALL_SET = [
    ("sam2", "sam2_hiera_t.yaml", "sam2_hiera_tiny.pt"),
    ("encoder", "dinov2_small", "dinov2/dinov2_vits14_pretrain.pth"),
]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m no_time_to_train.tools.random_checkpoints",
        description=(
            "Write RANDOM-WEIGHT stand-ins for Meta's SAM2 and DINOv2 checkpoints, in the official "
            "file formats and at the paths the configs expect. For smoke tests and timing only: "
            "results obtained with them are meaningless. Real weights: checkpoints/README.md."
        ),
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="required: confirms that you want random weights, not the real checkpoints",
    )
    parser.add_argument("--dest", default="checkpoints", help="checkpoints folder (default: %(default)s)")
    parser.add_argument(
        "--small",
        action="store_true",
        help="also write sam2_hiera_tiny.pt and dinov2/dinov2_vits14_pretrain.pth",
    )
    parser.add_argument(
        "--no-large",
        action="store_true",
        help="skip sam2_hiera_large.pt and dinov2/dinov2_vitl14_pretrain.pth (about 2 GB)",
    )
    parser.add_argument(
        "--encoders", nargs="+", default=[], metavar="NAME",
        help="also write these encoders (dinov3_*, clip_*, PE-Spatial-*: encoder_cfg.name) at the paths "
             "of the reference's configs, e.g. --encoders dinov3_small clip_b32 PE-Spatial-L14-448",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    if not args.random_weights:
        parser.error("this tool only writes random weights; pass --random-weights to confirm")
    if args.no_large and not args.small and not args.encoders:
        parser.error("nothing to write: --no-large without --small or --encoders")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    from no_time_to_train.encoders import encoder_spec

    jobs = ([] if args.no_large else _LARGE_SET) + (_SMALL_SET if args.small else [])
    jobs += [
        ("encoder", name, encoder_spec(name).ckpt_path.removeprefix("./checkpoints/"))
        for name in args.encoders
    ]
    dest = Path(args.dest)
    targets = [(kind, name, dest / rel) for kind, name, rel in jobs]
    existing = [str(path) for _, _, path in targets if path.exists()]
    if existing and not args.force:
        print(
            f"Refusing to overwrite existing file(s): {', '.join(existing)}. They may be real "
            f"checkpoints; move them away or pass --force.",
            file=sys.stderr,
        )
        return 1
    print("WARNING: writing RANDOM weights (smoke tests only; predictions will be meaningless).")
    for kind, name, path in targets:
        if kind == "sam2":
            from no_time_to_train.config import ModelCfg
            from no_time_to_train.proposers import proposer_plugin

            # The proposer plug-in's stand-in: the file at its official name in that folder.
            proposer_plugin("sam2").write_stand_in(ModelCfg(sam2_cfg_file=name), path.parent, args.seed)
            official = SAM2_CHECKPOINT_FILES[resolve_sam2_config(name)].file_name
        else:
            write_random_encoder_checkpoint(name, path, seed=args.seed)
            official = Path(encoder_spec(name).ckpt_path).name
        size_mb = path.stat().st_size / 2**20
        print(f"  wrote {path} ({size_mb:.0f} MiB): RANDOM weights in the format of {official}")
    print("Replace these files with the real checkpoints before any real run (checkpoints/README.md).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
