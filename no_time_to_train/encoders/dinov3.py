"""The ``dinov3`` family: Meta's DINOv3 ViTs (web LVD-1689M and satellite SAT-493M) through timm's
Eva; the last block's tokens after the final norm, class and 4 storage tokens dropped; 592 / 16;
ImageNet statistics as the reference (``encoder_cfg.pixel_stats: sat`` for Meta's SAT-493M ones).
Only RoPE positions: any multiple of 16 works as it is."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from no_time_to_train.checkpoints.registry import block_count
from no_time_to_train.encoders import EncoderFamily, EncoderSpec, official_spec, register_family

DOWNLOAD = (
    "DINOv3 weights are distributed by Meta after accepting the DINOv3 licence: request access at "
    "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ and download {file} from the "
    "link you receive into checkpoints/dinov3/checkpoints/."
)


def _spec(arch: str, timm_name: str, dim: int, depth: int, weights: str, digest: str) -> EncoderSpec:
    return official_spec("dinov3", timm_name, (dim, depth), 16, (592, 592), f"dinov3_{arch}_pretrain_{weights}-{digest}.pth",
                         "dinov3/checkpoints", DOWNLOAD)  # fmt: skip


# The *_qkvb timm variants keep the query/value biases of Meta's files (the plain ones drop them);
# the 7B model has none.
ENCODERS = {
    # LVD-1689M web images
    "dinov3_small": _spec("vits16", "vit_small_patch16_dinov3_qkvb", 384, 12, "lvd1689m", "08c60483"),
    "dinov3_small_plus": _spec("vits16plus", "vit_small_plus_patch16_dinov3_qkvb", 384, 12, "lvd1689m", "4057cbaa"),
    "dinov3_base": _spec("vitb16", "vit_base_patch16_dinov3_qkvb", 768, 12, "lvd1689m", "73cec8be"),
    "dinov3_large": _spec("vitl16", "vit_large_patch16_dinov3_qkvb", 1024, 24, "lvd1689m", "8aa4cbdd"),
    "dinov3_huge": _spec("vith16plus", "vit_huge_plus_patch16_dinov3_qkvb", 1280, 32, "lvd1689m", "7c1da9a5"),
    "dinov3_7b": _spec("vit7b16", "vit_7b_patch16_dinov3", 4096, 40, "lvd1689m", "a955f4ea"),
    # SAT-493M satellite images
    "dinov3_sat_large": _spec("vitl16", "vit_large_patch16_dinov3_qkvb", 1024, 24, "sat493m", "eadcf0ff"),
    "dinov3_sat_7b": _spec("vit7b16", "vit_7b_patch16_dinov3", 4096, 40, "sat493m", "a6675841"),
}  # fmt: skip

HEADS = {"dinov3_small": 6, "dinov3_small_plus": 6, "dinov3_base": 12, "dinov3_large": 16,
         "dinov3_sat_large": 16, "dinov3_huge": 20, "dinov3_7b": 32, "dinov3_sat_7b": 32}  # fmt: skip
# These models untie the norm of local-crop class tokens (a training-only tensor).
LOCAL_CLS_NORM = ("dinov3_sat_large", "dinov3_7b", "dinov3_sat_7b")


def build(name: str, path: Path | None, img_size: int, mean: tuple, std: tuple) -> nn.Module:
    from no_time_to_train.checkpoints.encoder_loading import build_timm_encoder, create_timm

    spec = ENCODERS[name]
    return build_timm_encoder(name, path, img_size, mean, std, lambda: create_timm(spec.timm_name, path))


def identify(state_dict: Mapping[str, Any]) -> str | None:
    """``storage_tokens``; width and depth; SwiGLU (plus, huge, 7B) and ``local_cls_norm``."""
    if not isinstance(state_dict.get("storage_tokens"), torch.Tensor):
        return None
    dim, depth = state_dict["cls_token"].shape[-1], block_count(state_dict, "blocks.")
    swiglu, local = "blocks.0.mlp.w1.weight" in state_dict, "local_cls_norm.weight" in state_dict
    names = [n for n, s in ENCODERS.items() if (s.feat_dim, s.depth) == (dim, depth)]
    exact = [
        n
        for n in names
        if (("plus" in n or "huge" in n or "7b" in n) == swiglu) and ((n in LOCAL_CLS_NORM) == local)
    ]
    return (exact or names or [None])[0]


def to_official(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Eva -> Meta's DINOv3 ``.pth``: storage tokens, a masked qkv bias, LayerScale and MLP
    names, RoPE periods, and the training-only tensors Meta's files hold."""
    out: dict[str, torch.Tensor] = {}
    cls = state["cls_token"]
    dim = cls.shape[-1]
    head_dim = state["blocks.0.attn.qkv.weight"].shape[0] // 3 // HEADS[name]
    swiglu = any(".mlp.fc1_g." in k for k in state)
    out["cls_token"] = cls
    out["storage_tokens"] = state["reg_token"]
    out["mask_token"] = torch.zeros(1, dim, dtype=cls.dtype, device=cls.device)
    out["patch_embed.proj.weight"] = state["patch_embed.proj.weight"]
    out["patch_embed.proj.bias"] = state["patch_embed.proj.bias"]
    periods = 100.0 ** (2 * torch.arange(head_dim // 4, device=cls.device) / (head_dim // 2))
    out["rope_embed.periods"] = periods.float()
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    for i in range(depth):
        b = f"blocks.{i}."
        blk = {k[len(b) :]: v for k, v in state.items() if k.startswith(b)}
        q = blk.pop("attn.q_bias", None)
        v = blk.pop("attn.v_bias", None)
        for key in ("norm1.weight", "norm1.bias", "attn.qkv.weight"):
            out[b + key] = blk.pop(key)
        if q is not None:  # Meta's files hold a qkv bias whose key part is masked to zero
            out[b + "attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
            out[b + "attn.qkv.bias_mask"] = torch.cat(
                [torch.ones_like(q), torch.zeros_like(q), torch.ones_like(v)]
            )
        out[b + "attn.proj.weight"] = blk.pop("attn.proj.weight")
        out[b + "attn.proj.bias"] = blk.pop("attn.proj.bias")
        out[b + "ls1.gamma"] = blk.pop("gamma_1")
        out[b + "norm2.weight"] = blk.pop("norm2.weight")
        out[b + "norm2.bias"] = blk.pop("norm2.bias")
        mlp = ("w1", "w2", "w3") if swiglu else ("fc1", "fc2")
        timm_mlp = ("fc1_g", "fc1_x", "fc2") if swiglu else ("fc1", "fc2")
        for meta_key, timm_key in zip(mlp, timm_mlp, strict=True):
            for part in ("weight", "bias"):
                out[f"{b}mlp.{meta_key}.{part}"] = blk.pop(f"mlp.{timm_key}.{part}")
        out[b + "ls2.gamma"] = blk.pop("gamma_2")
        if blk:
            raise ValueError(f"unmapped DINOv3 block tensors: {sorted(blk)}")
    out["norm.weight"] = state["norm.weight"]
    out["norm.bias"] = state["norm.bias"]
    if name in LOCAL_CLS_NORM:
        out["local_cls_norm.weight"] = torch.ones_like(state["norm.weight"])
        out["local_cls_norm.bias"] = torch.zeros_like(state["norm.bias"])
    return out


register_family(EncoderFamily(
    name="dinov3", encoders=ENCODERS, build=build, pixel_stats="imagenet", identify=identify,
    to_official=to_official, smallest="dinov3_small", subfolder="dinov3/checkpoints",
))  # fmt: skip
