"""Build the DINOv3, CLIP and Perception Encoder encoders from their official files, strictly.

timm converts each official layout (its checkpoint filters: Meta's DINOv3 ``.pth``, OpenAI's CLIP
state dict with ``visual.*`` keys, Meta's PE ``.pt``) and loads it with every key and shape
checked; any failure becomes a :class:`CheckpointError` naming the file, the encoder and where the
official file comes from. ``ckpt_path=None`` gives random weights (tests, timing).

Input sizes other than the trained one: DINOv3 has only RoPE (any multiple of 16 works as is);
PE's absolute position embedding is resized bilinearly and its RoPE computed on the new grid,
as Meta's PE code does; CLIP's position embedding is resized by timm (bicubic) at other sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from no_time_to_train.checkpoints.encoder_zoo import CLIP_MEAN, CLIP_STD, SAT_MEAN, SAT_STD, encoder_spec
from no_time_to_train.checkpoints.loading import brief, read_checkpoint, require_file
from no_time_to_train.errors import CheckpointError, ConfigError
from no_time_to_train.models.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from no_time_to_train.models.vit_encoders import ZooEncoder, bilinear_pos_embed

PIXEL_STATS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "sat": (SAT_MEAN, SAT_STD),
}
FAMILY_STATS = {"dinov2": "imagenet", "dinov3": "imagenet", "clip": "clip", "pe": "imagenet"}


def pixel_stats_of(family: str, choice: str = "default") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) an encoder normalises with: the family's (as the reference) or ``choice``."""
    key = FAMILY_STATS[family] if choice == "default" else choice
    if key not in PIXEL_STATS:
        raise ConfigError(
            f"model_cfg.encoder_cfg.pixel_stats={choice!r}; choose default, {', '.join(PIXEL_STATS)}."
        )
    return PIXEL_STATS[key]


def _create(timm_name: str, path: Path | None, **kwargs) -> nn.Module:  # noqa: ANN003
    import timm

    if path is None:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    return timm.create_model(
        timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )


def build_zoo_encoder(name: str, ckpt_path: str | os.PathLike | None, img_size: int | None = None,
                      pixel_stats: str = "default") -> ZooEncoder:  # fmt: skip
    """A frozen ``dinov3_*``, ``clip_*`` or ``PE-Spatial-*`` encoder (names: ``encoder_zoo.ZOO``).

    Args:
        ckpt_path: the official file (see ``encoder_zoo``), or None for random weights.
        img_size: the input side (default: the reference's for this encoder); a multiple of its
            patch size.
        pixel_stats: "default" (the family's, as the reference), "imagenet", "clip" or "sat".
    """
    spec = encoder_spec(name)
    if spec.family == "dinov2":
        raise ValueError("DINOv2 is built by checkpoints.loading.build_dinov2")
    size = int(img_size or spec.img_size)
    if size <= 0 or size % spec.patch_size:
        raise ConfigError(
            f"model_cfg.encoder_cfg.img_size={size} must be a positive multiple of {name}'s patch size "
            f"{spec.patch_size} (the reference uses {spec.img_size})."
        )
    mean, std = pixel_stats_of(spec.family, pixel_stats)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = None if ckpt_path is None else Path(ckpt_path)
    what = f"{name} encoder"
    if path is not None:
        require_file(path, what, spec.download)
    try:
        if spec.family == "pe":
            vit = _create_pe(spec.timm_name, path, size, spec.patch_size, spec.native_size)
        elif spec.family == "clip" and size != spec.native_size:
            vit = _create(spec.timm_name, path, img_size=size)
        else:
            vit = _create(spec.timm_name, path)
    except Exception as err:
        if path is None:
            raise
        read_checkpoint(path, what, spec.download)  # raises for unreadable files
        raise CheckpointError(
            f"{what} checkpoint {path} does not match {name} ({spec.timm_name}, width {spec.feat_dim}, "
            f"{spec.depth} blocks). timm reported: {brief(err).rstrip('.')}. {spec.download}"
        ) from err
    vit.eval()
    vit.requires_grad_(False)
    encoder = ZooEncoder(vit, spec.family, size, spec.patch_size, mean, std)
    encoder.eval()
    return encoder


def _create_pe(timm_name: str, path: Path | None, size: int, patch: int, native: int) -> nn.Module:
    """PE at ``size``: loaded strictly at its native size, then moved to the new grid the way
    Meta's code runs it there (bilinear position embedding, RoPE on the actual grid)."""
    model = _create(timm_name, path)
    if size == native:
        return model
    grid = size // patch
    state = model.state_dict()
    num_prefix = model.num_prefix_tokens
    state["pos_embed"] = bilinear_pos_embed(state["pos_embed"], num_prefix, grid)
    # ref_feat_shape = the grid itself: RoPE positions 0 .. grid-1, not rescaled to the native grid.
    resized = _create(timm_name, None, img_size=size, ref_feat_shape=(grid, grid))
    resized.load_state_dict(state, strict=True)
    return resized
