"""Compare this project's DINOv3, CLIP and PE features with the official implementations'.

Needs the official sources on disk (not dependencies of this project): Meta's ``dinov3`` package,
OpenAI's ``clip`` package and Meta's ``perception_models`` (``core/vision_encoder``; needs
``einops``). For each encoder it builds the official model with random weights (every parameter
drawn, layer scales in [0.1, 0.5] so that no block is an identity), saves the official state dict
as its official file would hold it, loads that file through ``no_time_to_train.encoders.build_encoder`` (timm) and
prints the largest difference of the patch features at the reference's input size::

    python scripts/compare_official_encoders.py --dinov3-src DIR --clip-src DIR --pe-src DIR

(each ``DIR`` is the folder that holds the package: ``DIR/dinov3``, ``DIR/clip``, ``DIR/core``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from no_time_to_train.encoders import ENCODERS as ZOO
from no_time_to_train.encoders import build_encoder
from no_time_to_train.models.pixel_stats import IMAGENET_MEAN, IMAGENET_STD


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name or name.endswith(("ls_1", "ls_2")):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 + 0.1)
            elif p.ndim == 1 and name.endswith("weight"):  # norms
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:  # noqa: ANN001
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def report(name: str, ours: torch.Tensor, ref: torch.Tensor, seconds: float) -> float:
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"{name:22s} {tuple(ours.shape)!s:22s} max |ours - official| = {diff:.3g} "
          f"(features up to {scale:.3g}, relative {diff / scale:.2g}; {seconds:.0f} s)")  # fmt: skip
    return diff / scale


def compare_dinov3(src: Path, names: list[str], tmp: Path) -> list[float]:
    sys.path.insert(0, str(src))
    from dinov3.hub import backbones

    arch = {"dinov3_small": "vits16", "dinov3_small_plus": "vits16plus", "dinov3_base": "vitb16",
            "dinov3_large": "vitl16", "dinov3_huge": "vith16plus", "dinov3_sat_large": "vitl16"}  # fmt: skip
    out = []
    for name in names:
        t0 = time.time()
        kwargs = {"weights": backbones.Weights.SAT493M} if "sat" in name else {}
        official = getattr(backbones, f"dinov3_{arch[name]}")(pretrained=False, **kwargs).eval()
        randomise(official)
        path = tmp / f"{name}.pth"
        torch.save(official.state_dict(), path)
        ours = build_encoder(name, path)
        x = torch.rand(1, 3, ours.img_size, ours.img_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = official.forward_features(normalise(x, IMAGENET_MEAN, IMAGENET_STD))["x_norm_patchtokens"]
            got = ours(x).flatten(1, 2)
        out.append(report(name, got, ref, time.time() - t0))
    return out


def compare_clip(src: Path, names: list[str], tmp: Path) -> list[float]:
    sys.path.insert(0, str(src))
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_clip_model", src / "clip" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # (embed_dim, resolution, layers, width, patch): OpenAI's ViT configurations
    configs = {"clip_b32": (512, 224, 12, 768, 32), "clip_b16": (512, 224, 12, 768, 16),
               "clip_l14": (768, 224, 24, 1024, 14), "clip_l14@336px": (768, 336, 24, 1024, 14)}  # fmt: skip
    out = []
    for name in names:
        t0 = time.time()
        embed, res, layers, width, patch = configs[name]
        official = module.CLIP(embed, res, layers, width, patch, 77, 49408, 512 if width == 768 else 768,
                               8 if width == 768 else 12, 12).eval()  # fmt: skip
        randomise(official)
        path = tmp / f"{name}.state_dict.pt"
        torch.save(official.state_dict(), path)
        ours = build_encoder(name, path)
        x = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(1))
        v = official.visual
        with torch.no_grad():
            from no_time_to_train.models.pixel_stats import CLIP_MEAN, CLIP_STD

            h = v.conv1(normalise(x, CLIP_MEAN, CLIP_STD)).flatten(2).permute(0, 2, 1)
            cls = v.class_embedding.view(1, 1, -1).expand(h.shape[0], -1, -1)
            h = torch.cat([cls, h], dim=1) + v.positional_embedding
            h = v.ln_pre(h)
            h = v.transformer(h.permute(1, 0, 2)).permute(1, 0, 2)
            ref = F.normalize(h[:, 1:], dim=-1)  # the reference: no ln_post, no projection
            got = ours(x).flatten(1, 2)
        out.append(report(name, got, ref, time.time() - t0))
    return out


def compare_pe(src: Path, names: list[str], tmp: Path) -> list[float]:
    sys.path.insert(0, str(src))
    from core.vision_encoder.pe import VisionTransformer

    out = []
    for name in names:
        t0 = time.time()
        official = VisionTransformer.from_config(name, pretrained=False).eval()
        randomise(official)
        path = tmp / f"{name}.pt"
        torch.save(official.state_dict(), path)
        ours = build_encoder(name, path)
        x = torch.rand(1, 3, ours.img_size, ours.img_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = official.forward_features(normalise(x, IMAGENET_MEAN, IMAGENET_STD), norm=False,
                                            strip_cls_token=True)  # fmt: skip
            got = ours(x).flatten(1, 2)
        out.append(report(name, got, ref, time.time() - t0))
    return out


LAYOUT_NAMES = ("dinov3_small", "dinov3_small_plus", "dinov3_sat_large", "dinov3_7b", "clip_b32",
                "PE-Spatial-L14-448", "PE-Spatial-G14-448")  # fmt: skip


def official_layouts(args: argparse.Namespace) -> dict[str, dict[str, list[int]]]:
    """Keys and shapes of the official state dicts, built on the meta device (nothing allocated).
    CLIP: the vision tower's keys and ``logit_scale`` (the encoder reads nothing else)."""
    layouts = {}
    with torch.device("meta"):
        if args.dinov3_src:
            sys.path.insert(0, str(args.dinov3_src))
            from dinov3.hub import backbones

            for name, fn, kw in (("dinov3_small", "vits16", {}), ("dinov3_small_plus", "vits16plus", {}),
                                 ("dinov3_sat_large", "vitl16", {"weights": backbones.Weights.SAT493M}),
                                 ("dinov3_7b", "vit7b16", {})):  # fmt: skip
                sd = getattr(backbones, f"dinov3_{fn}")(pretrained=False, **kw).state_dict()
                layouts[name] = {k: list(v.shape) for k, v in sd.items()}
        if args.clip_src:
            import importlib.util

            spec = importlib.util.spec_from_file_location(
                "official_clip_model", args.clip_src / "clip" / "model.py"
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sd = module.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).state_dict()
            layouts["clip_b32"] = {k: list(v.shape) for k, v in sd.items()
                                   if k.startswith("visual.") or k == "logit_scale"}  # fmt: skip
        if args.pe_src:
            sys.path.insert(0, str(args.pe_src))
            from core.vision_encoder.pe import VisionTransformer

            for name in ("PE-Spatial-L14-448", "PE-Spatial-G14-448"):
                sd = VisionTransformer.from_config(name, pretrained=False).state_dict()
                layouts[name] = {k: list(v.shape) for k, v in sd.items()}
    return layouts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dinov3-src", type=Path)
    p.add_argument("--clip-src", type=Path)
    p.add_argument("--pe-src", type=Path)
    p.add_argument("--names", nargs="*", help="encoders to compare (default: all but the 7B and G models)")
    p.add_argument("--tol", type=float, default=1e-5, help="largest relative difference accepted")
    p.add_argument("--dump-layouts", type=Path, help="write the official key layouts (json) here and stop")
    args = p.parse_args(argv)
    if args.dump_layouts:
        import json

        layouts = official_layouts(args)
        blocks = [
            "  "
            + json.dumps(name)
            + ": {\n"
            + ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items())
            + "\n  }"
            for name, keys in layouts.items()
        ]  # one key per line: readable diffs
        args.dump_layouts.write_text("{\n" + ",\n".join(blocks) + "\n}\n")
        print(f"{len(layouts)} layouts written to {args.dump_layouts}: {', '.join(layouts)}")
        return 0
    skip = {"dinov3_7b", "dinov3_sat_7b", "PE-Spatial-G14-448"}
    names = args.names or [n for n in ZOO if n not in skip and ZOO[n].family != "dinov2"]
    torch.set_grad_enabled(False)
    diffs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, src, fn in (("dinov3", args.dinov3_src, compare_dinov3), ("clip", args.clip_src, compare_clip),
                                ("pe", args.pe_src, compare_pe)):  # fmt: skip
            chosen = [n for n in names if ZOO[n].family == family]
            if chosen and src is None:
                print(f"{family}: skipped (no --{family}-src)")
            elif chosen:
                diffs += fn(src, chosen, Path(tmp))
    worst = max(diffs, default=0.0)
    print(f"largest relative difference: {worst:.3g} (tolerance {args.tol:g})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
