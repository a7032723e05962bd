"""DINOv3, CLIP and Perception Encoder ViTs (timm) as patch-feature encoders.

Same contract as :class:`~no_time_to_train.models.dinov2.DinoV2Encoder`: ``(B, 3, H, W)`` images
in [0, 1] -> ``(B, g, g, D)`` patch features with ``g = img_size // patch_size``; attributes
``feat_dim``, ``patch_size``, ``img_size``, ``grid_size``. Which tokens and norms each family
uses is in ``checkpoints.encoder_zoo``. Pure torch: building one from an official file is
``checkpoints.encoder_loading.build_zoo_encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.models.pixel_stats import encoder_input


def bilinear_pos_embed(pos_embed: torch.Tensor, num_prefix: int, grid: int) -> torch.Tensor:
    """Resize a square absolute position embedding ``(1, num_prefix + M*M, D)`` to ``grid`` per
    side, bilinearly with ``align_corners=False`` and no antialias (Perception Encoder's own rule);
    the prefix (class-token) positions are kept."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patches is not square")
    if side == grid:
        return pos_embed
    square = patches.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=(grid, grid), mode="bilinear", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([prefix.float(), resized], dim=1).to(pos_embed.dtype)


class ZooEncoder(nn.Module):
    """A timm ViT of the ``dinov3``, ``clip`` or ``pe`` family mapped to patch features.

    Args:
        vit: the timm model (``Eva`` for DINOv3 and PE, ``VisionTransformer`` for CLIP).
        family: "dinov3" (final norm), "clip" (no final norm; tokens L2-normalised) or "pe"
            (no final norm: the spatial models have none).
        img_size, patch_size: the input side and the patch side; ``img_size % patch_size == 0``.
        mean, std: the pixel statistics images are normalised with.
    """

    def __init__(self, vit: nn.Module, family: str, img_size: int, patch_size: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:  # fmt: skip
        super().__init__()
        if family not in ("dinov3", "clip", "pe"):
            raise ValueError(f"unknown encoder family {family!r}")
        self.vit = vit
        self.family = family
        self.feat_dim = int(vit.embed_dim)
        self.patch_size = int(patch_size)
        self.img_size = int(img_size)
        self.grid_size = self.img_size // self.patch_size
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.register_buffer("mean", torch.tensor(tuple(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std)).view(1, 3, 1, 1), persistent=False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` -> ``(B, prefix + g*g, D)`` tokens of the last block, with
        the family's final norm (DINOv3) or without (CLIP, PE)."""
        vit = self.vit
        if self.family == "clip":
            # timm's forward_features would add ln_post (its `norm`), which the reference skips.
            x = vit.patch_embed(x)
            x = vit._pos_embed(x)
            x = vit.patch_drop(x)
            x = vit.norm_pre(x)
            return vit.blocks(x)
        return vit.forward_features(x)  # DINOv3: final norm; PE-Spatial: norm is Identity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, g, g, D)``; images of another size are resized
        bicubically (``align_corners=False``, no antialias) to ``img_size`` first."""
        x = encoder_input(images, self.img_size, self.mean, self.std)
        patches = self.tokens(x)[:, self.num_prefix_tokens :]
        if self.family == "clip":
            patches = F.normalize(patches, dim=-1)
        return patches.reshape(x.shape[0], self.grid_size, self.grid_size, self.feat_dim)
