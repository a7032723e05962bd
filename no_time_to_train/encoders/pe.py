"""The ``pe`` family: Meta's Perception Encoder Spatial models through timm; the last block's
tokens (these models have no final norm), class token dropped; ImageNet statistics; the reference
runs them at 518 / 14 (native 448): the absolute position embedding is then resized bilinearly and
RoPE computed on the new grid, as Meta's PE code does."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from no_time_to_train.checkpoints.registry import block_count
from no_time_to_train.encoders import EncoderFamily, EncoderSpec, official_spec, register_family

DOWNLOAD = (
    "Perception Encoder weights are on the Hugging Face hub (facebook/{repo}, Apache-2.0; the model page "
    "may ask you to log in and accept its terms): `bash checkpoints/download_checkpoints.sh --pe`, or put "
    "{file} into checkpoints/pe/."
)


def _spec(repo: str, timm_name: str, dim: int, depth: int) -> EncoderSpec:
    return official_spec(
        "pe", timm_name, (dim, depth), 14, (518, 448), f"{repo}.pt", "pe", DOWNLOAD, repo=repo
    )


ENCODERS = {
    "PE-Spatial-L14-448": _spec("PE-Spatial-L14-448", "vit_pe_spatial_large_patch14_448", 1024, 24),
    "PE-Spatial-G14-448": _spec("PE-Spatial-G14-448", "vit_pe_spatial_gigantic_patch14_448", 1536, 50),
}


def _create_at(name: str, path: Path | None, size: int) -> nn.Module:
    """PE at ``size``: loaded strictly at its native size, then moved to the new grid the way
    Meta's code runs it there (bilinear position embedding, RoPE on the actual grid)."""
    from no_time_to_train.checkpoints.encoder_loading import create_timm
    from no_time_to_train.models.vit_encoders import bilinear_pos_embed

    spec = ENCODERS[name]
    model = create_timm(spec.timm_name, path)
    if size == spec.native_size:
        return model
    grid = size // spec.patch_size
    state = model.state_dict()
    state["pos_embed"] = bilinear_pos_embed(state["pos_embed"], model.num_prefix_tokens, grid)
    # ref_feat_shape = the grid itself: RoPE positions 0 .. grid-1, not rescaled to the native grid.
    resized = create_timm(spec.timm_name, None, img_size=size, ref_feat_shape=(grid, grid))
    resized.load_state_dict(state, strict=True)
    return resized


def build(name: str, path: Path | None, img_size: int, mean: tuple, std: tuple) -> nn.Module:
    from no_time_to_train.checkpoints.encoder_loading import build_timm_encoder

    # PE-Spatial's final norm is an Identity: forward_features gives the last block's tokens.
    return build_timm_encoder(name, path, img_size, mean, std, lambda: _create_at(name, path, img_size))


def identify(state_dict: Mapping[str, Any]) -> str | None:
    """``conv1.weight`` without a ``visual.`` prefix: width and depth."""
    conv = state_dict.get("conv1.weight")
    if not isinstance(conv, torch.Tensor):
        return None
    depth = block_count(state_dict, "transformer.resblocks.")
    names = [n for n, s in ENCODERS.items() if (s.feat_dim, s.depth) == (conv.shape[0], depth)]
    return names[0] if names else None


def to_official(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's vision-tower keys, no prefix (RoPE tensors are computed, not stored)."""
    from no_time_to_train.checkpoints.official_layouts import visual_layout

    return visual_layout({k: v for k, v in state.items() if "rope" not in k}, "", keep_head=False)


register_family(EncoderFamily(
    name="pe", encoders=ENCODERS, build=build, pixel_stats="imagenet", identify=identify, to_official=to_official,
    smallest="PE-Spatial-L14-448", subfolder="pe",
))  # fmt: skip
