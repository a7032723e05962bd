"""The official file layouts of the DINOv3, CLIP and Perception Encoder weights, from timm models.

``to_official(name, timm_state_dict)`` renames a timm model's tensors to the keys and shapes of
the official file (Meta's DINOv3 ``.pth``, OpenAI's CLIP state dict, Meta's PE ``.pt``): the
inverse of timm's checkpoint filters. Random-weight stand-ins are written with it, and the tests
check the result against layouts recorded from the official code
(``tests/data/official_layouts.json``, made by ``scripts/compare_official_encoders.py
--dump-layouts``) and that timm's filters turn it back into the model exactly.

It works on ``meta`` tensors too: the 7B and G models' layouts are checked without allocating.
"""

from __future__ import annotations

import re

import torch

from no_time_to_train.checkpoints.encoder_zoo import encoder_spec

# timm Eva (DINOv3) -> Meta: per-block renames
_DINOV3_BLOCK = (("gamma_1", "ls1.gamma"), ("gamma_2", "ls2.gamma"),
                 ("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."))  # fmt: skip
# OpenAI CLIP / PE "visual" layout -> timm, as timm's filters apply them (order matters)
_CLIP_SWAPS = (("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"),
               ("transformer.resblocks.", "blocks."), ("ln_pre", "norm_pre"), ("ln_post", "norm"),
               ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"), ("mlp.c_fc", "mlp.fc1"),
               ("mlp.c_proj", "mlp.fc2"))  # fmt: skip


def _swiglu(state: dict[str, torch.Tensor]) -> bool:
    return any(".mlp.fc1_g." in k for k in state)


def _dinov3(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    dim = state["cls_token"].shape[-1]
    head_dim = state["blocks.0.attn.qkv.weight"].shape[0] // 3 // _heads(name)
    swiglu = _swiglu(state)
    out["cls_token"] = state["cls_token"]
    out["storage_tokens"] = state["reg_token"]
    out["mask_token"] = torch.zeros(1, dim, dtype=state["cls_token"].dtype, device=state["cls_token"].device)
    out["patch_embed.proj.weight"] = state["patch_embed.proj.weight"]
    out["patch_embed.proj.bias"] = state["patch_embed.proj.bias"]
    periods = 100.0 ** (2 * torch.arange(head_dim // 4, device=state["cls_token"].device) / (head_dim // 2))
    out["rope_embed.periods"] = periods.float()
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    for i in range(depth):
        b = f"blocks.{i}."
        blk = {k[len(b) :]: v for k, v in state.items() if k.startswith(b)}
        q = blk.pop("attn.q_bias", None)
        v = blk.pop("attn.v_bias", None)
        ordered = ["norm1.weight", "norm1.bias", "attn.qkv.weight"]
        for key in ordered:
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
    if name in ("dinov3_sat_large", "dinov3_7b", "dinov3_sat_7b"):
        # These models untie the norm of local-crop class tokens (a training-only tensor).
        out["local_cls_norm.weight"] = torch.ones_like(state["norm.weight"])
        out["local_cls_norm.bias"] = torch.zeros_like(state["norm.bias"])
    return out


def _heads(name: str) -> int:
    return {"dinov3_small": 6, "dinov3_small_plus": 6, "dinov3_base": 12, "dinov3_large": 16,
            "dinov3_sat_large": 16, "dinov3_huge": 20, "dinov3_7b": 32, "dinov3_sat_7b": 32}[name]  # fmt: skip


def _visual(state: dict[str, torch.Tensor], prefix: str, keep_head: bool) -> dict[str, torch.Tensor]:
    """timm ViT -> OpenAI's / PE's visual layout (inverse of ``_CLIP_SWAPS``)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k in ("head.bias",) or (k == "head.weight" and not keep_head):
            continue
        if k == "head.weight":
            out[prefix + "proj"] = v.transpose(0, 1)
            continue
        if k == "cls_token":
            out[prefix + "class_embedding"] = v.reshape(-1)
            continue
        if k == "pos_embed":
            v = v[0]
        new = k
        new = re.sub(r"^blocks\.", "transformer.resblocks.", new)
        new = new.replace("patch_embed.proj", "conv1").replace("pos_embed", "positional_embedding")
        new = new.replace("norm_pre", "ln_pre")
        new = re.sub(r"^norm\.", "ln_post.", new)
        new = re.sub(r"\.norm([12])\.", r".ln_\1.", new)
        new = new.replace("attn.qkv.", "attn.in_proj_").replace("attn.proj.", "attn.out_proj.")
        new = new.replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
        new = new.replace("gamma_1", "ls_1.gamma").replace("gamma_2", "ls_2.gamma")
        out[prefix + new] = v
    return out


def to_official(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official file's state dict for encoder ``name`` from its timm model's ``state_dict()``.

    CLIP: the ``visual.*`` tensors and ``logit_scale`` of OpenAI's state dict (the text tower,
    which the encoder never reads, is left out). PE: Meta's vision-tower keys, no prefix.
    """
    family = encoder_spec(name).family
    if family == "dinov3":
        return _dinov3(name, state)
    if family == "clip":
        out = _visual(state, "visual.", keep_head=True)
        out["logit_scale"] = torch.tensor(4.6052, device=state["cls_token"].device)
        return out
    if family == "pe":
        return _visual({k: v for k, v in state.items() if "rope" not in k}, "", keep_head=False)
    raise ValueError(f"{name}: DINOv2 files are written by tools.random_checkpoints.dinov2_meta_state_dict")
