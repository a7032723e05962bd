"""The ``dinov2`` family: Meta's DINOv2 ViTs (with or without 4 register tokens) through timm;
final-norm patch tokens at 518 / 14, ImageNet statistics, Meta's ``*_pretrain.pth`` files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from no_time_to_train.checkpoints.registry import DINOV2_VARIANTS, block_count
from no_time_to_train.encoders import EncoderFamily, EncoderSpec, register_family

ENCODERS = {
    name: EncoderSpec("dinov2", v.timm_name, v.feat_dim, v.depth, 14, 518, 518, f"./checkpoints/dinov2/{v.file_name}",
                      f"{v.url} (`bash checkpoints/download_checkpoints.sh{' ' + v.download_flag if v.download_flag else ''}`)")
    for name, v in DINOV2_VARIANTS.items()
}  # fmt: skip


def build(name: str, path: Path | None, img_size: int, mean: tuple, std: tuple) -> nn.Module:
    from no_time_to_train.checkpoints.loading import build_dinov2

    return build_dinov2(name, path, img_size=img_size)


def identify(state_dict: Mapping[str, Any]) -> str | None:
    """Meta's DINOv2 layout: ``pos_embed`` with the class position; width, depth and registers."""
    pos = state_dict.get("pos_embed")
    if not isinstance(pos, torch.Tensor) or "storage_tokens" in state_dict:
        return None
    dim, depth = pos.shape[-1], block_count(state_dict, "blocks.")
    registers = 4 if ("register_tokens" in state_dict or "reg_token" in state_dict) else 0
    for name, v in DINOV2_VARIANTS.items():
        if (v.feat_dim, v.depth, v.registers) == (dim, depth, registers):
            return name
    return None


def to_official(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm DINOv2 ViT's ``state_dict()`` in the key layout of Meta's ``*_pretrain.pth`` files.

    The inverse of timm's ``_convert_dinov2``:

    * ``mask_token`` ``(1, D)`` is added (zeros; Meta's file has it, the encoder never uses it).
    * register models: timm's ``reg_token`` becomes ``register_tokens``; timm keeps the class
      token's position folded into ``cls_token`` and a patch-only ``pos_embed``, Meta keeps
      ``pos_embed`` ``(1, 1 + N, D)`` with the class position first. The class position is split
      off as the bfloat16 rounding of ``cls_token`` so that timm's ``cls_token + pos_embed[:, 0]``
      restores the original bits exactly (the difference is exact by Sterbenz's lemma).
    * SwiGLU MLPs (giant): ``mlp.fc1`` -> ``mlp.w12`` and ``mlp.fc2`` -> ``mlp.w3`` (timm's packed
      SwiGLU uses the same ``[x1 | x2]`` layout and ``silu(x1) * x2`` as Meta's ``w12``).
    """
    timm_sd = {k: v.detach().clone() for k, v in state.items()}
    # A packed [x1 | x2] projection is twice as wide as the MLP's hidden size.
    swiglu = timm_sd["blocks.0.mlp.fc1.weight"].shape[0] == 2 * timm_sd["blocks.0.mlp.fc2.weight"].shape[1]
    cls_token = timm_sd.pop("cls_token")
    meta: dict[str, torch.Tensor] = {"mask_token": torch.zeros(1, cls_token.shape[-1], dtype=cls_token.dtype,
                                                               device=cls_token.device)}  # fmt: skip
    if "reg_token" in timm_sd:
        cls_pos = cls_token.to(torch.bfloat16).to(cls_token.dtype)
        meta["cls_token"] = cls_token - cls_pos
        meta["pos_embed"] = torch.cat([cls_pos, timm_sd.pop("pos_embed")], dim=1)
        meta["register_tokens"] = timm_sd.pop("reg_token")
    else:
        meta["cls_token"] = cls_token
    for key, value in timm_sd.items():
        if swiglu:
            key = re.sub(r"^(blocks\.\d+\.mlp)\.fc1\.", r"\1.w12.", key)
            key = re.sub(r"^(blocks\.\d+\.mlp)\.fc2\.", r"\1.w3.", key)
        meta[key] = value
    return meta


def random_model(name: str, seed: int) -> nn.Module:
    from no_time_to_train.tools.random_checkpoints import random_timm_vit

    # Biases stay timm's zeros (the files these stand in for were written so first).
    return random_timm_vit(ENCODERS[name].timm_name, seed, draw_biases=False)


register_family(EncoderFamily(
    name="dinov2", encoders=ENCODERS, build=build, pixel_stats="imagenet", identify=identify,
    to_official=to_official, random_model=random_model, smallest="dinov2_small", subfolder="dinov2",
    other_pixel_stats=False,
))  # fmt: skip
