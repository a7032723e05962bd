"""The ``clip`` family: OpenAI's CLIP ViTs (QuickGELU) through timm, up to the last block (no
``ln_post``, no projection), class token dropped, every token L2-normalised, as the reference;
CLIP's pixel statistics; 224 (or 336) / 32, 16 or 14. The configs read a plain state dict with
OpenAI's ``visual.*`` keys (``tools.clip_state_dict`` converts OpenAI's TorchScript archives)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from no_time_to_train.checkpoints.registry import block_count
from no_time_to_train.encoders import EncoderFamily, EncoderSpec, official_spec, register_family

DOWNLOAD = (
    "OpenAI's CLIP weights come as TorchScript archives ({jit}); the configs read a plain state dict: "
    "`bash checkpoints/download_checkpoints.sh --clip` downloads and converts them, or "
    "`python -m no_time_to_train.tools.clip_state_dict {jit} checkpoints/clip/{file}` converts your copy."
)


def _spec(tag: str, timm_name: str, dim: int, depth: int, patch: int, size: int) -> EncoderSpec:
    return official_spec("clip", timm_name, (dim, depth), patch, (size, size), f"ViT-{tag}.state_dict.pt", "clip",
                         DOWNLOAD, jit=f"ViT-{tag}.pt")  # fmt: skip


ENCODERS = {
    "clip_b32": _spec("B-32", "vit_base_patch32_clip_quickgelu_224.openai", 768, 12, 32, 224),
    "clip_b16": _spec("B-16", "vit_base_patch16_clip_quickgelu_224.openai", 768, 12, 16, 224),
    "clip_l14": _spec("L-14", "vit_large_patch14_clip_quickgelu_224.openai", 1024, 24, 14, 224),
    "clip_l14@336px": _spec("L-14-336px", "vit_large_patch14_clip_quickgelu_336.openai", 1024, 24, 14, 336),
}  # fmt: skip


def last_block_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's tokens: timm's forward_features would add ln_post (its ``norm``), which
    the reference skips."""
    x = vit.patch_embed(x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    return vit.blocks(x)


def build(name: str, path: Path | None, img_size: int, mean: tuple, std: tuple) -> nn.Module:
    from no_time_to_train.checkpoints.encoder_loading import build_timm_encoder, create_timm

    spec = ENCODERS[name]
    # timm resizes the position embedding (bicubic) when built at another size.
    extra = {"img_size": img_size} if img_size != spec.native_size else {}
    return build_timm_encoder(name, path, img_size, mean, std, lambda: create_timm(spec.timm_name, path, **extra),
                              tokens=last_block_tokens, l2_normalize=True)  # fmt: skip


def identify(state_dict: Mapping[str, Any]) -> str | None:
    """``visual.conv1.weight``: width, depth, patch side and native size."""
    conv = state_dict.get("visual.conv1.weight")
    if not isinstance(conv, torch.Tensor):
        return None
    side = int(round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)) * conv.shape[-1]
    depth = block_count(state_dict, "visual.transformer.resblocks.")
    names = [n for n, s in ENCODERS.items() if (s.feat_dim, s.depth) == (conv.shape[0], depth)]
    exact = [n for n in names if ENCODERS[n].patch_size == conv.shape[-1] and ENCODERS[n].native_size == side]
    return (exact or names or [None])[0]


def to_official(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors and ``logit_scale`` of OpenAI's state dict (the text tower, which
    the encoder never reads, is left out)."""
    from no_time_to_train.checkpoints.official_layouts import visual_layout

    out = visual_layout(state, "visual.", keep_head=True)
    out["logit_scale"] = torch.tensor(4.6052, device=state["cls_token"].device)
    return out


register_family(EncoderFamily(
    name="clip", encoders=ENCODERS, build=build, pixel_stats="clip", identify=identify, to_official=to_official,
    smallest="clip_b32", subfolder="clip",
))  # fmt: skip
