"""The official file layouts of the encoders' weights, from timm models.

``to_official(name, timm_state_dict)`` renames a timm model's tensors to the keys and shapes of
the official file (Meta's DINOv2 and DINOv3 ``.pth``, OpenAI's CLIP state dict, Meta's PE ``.pt``):
the inverse of timm's checkpoint filters, each family's own (``no_time_to_train.encoders``);
``visual_layout`` is the one OpenAI's CLIP and Meta's PE share. Random-weight stand-ins are written
with it, and the tests check the result against layouts recorded from the official code
(``tests/data/official_layouts.json``, made by ``scripts/compare_official_encoders.py
--dump-layouts``) and that timm's filters turn it back into the model exactly.

It works on ``meta`` tensors too: the 7B and G models' layouts are checked without allocating.
"""

from __future__ import annotations

import re

import torch


def visual_layout(state: dict[str, torch.Tensor], prefix: str, keep_head: bool) -> dict[str, torch.Tensor]:
    """timm ViT -> OpenAI's / PE's visual layout (the inverse of timm's CLIP / PE checkpoint filters)."""
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
    """The official file's state dict for encoder ``name`` from its timm model's ``state_dict()``
    (its family's conversion, ``no_time_to_train.encoders``)."""
    from no_time_to_train.encoders import to_official as family_to_official

    return family_to_official(name, state)
