"""DINOv3, CLIP and Perception Encoder ViTs (timm) as patch-feature encoders.

Same contract as :class:`~no_time_to_train.models.dinov2.DinoV2Encoder`: ``(B, 3, H, W)`` images
in [0, 1] -> ``(B, g, g, D)`` patch features with ``g = img_size // patch_size``; attributes
``feat_dim``, ``patch_size``, ``img_size``, ``grid_size``. Which tokens and norms each family
uses is in its module of ``no_time_to_train.encoders``. Pure torch: building one from an official
file is ``no_time_to_train.encoders.build_encoder``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.models.pixel_stats import encoder_input
from no_time_to_train.models.pos_embed import resize_pos_embed


def bilinear_pos_embed(pos_embed: torch.Tensor, num_prefix: int, grid: int) -> torch.Tensor:
    """Resize a square absolute position embedding ``(1, num_prefix + M*M, D)`` to ``grid`` per
    side, bilinearly with ``align_corners=False`` and no antialias (Perception Encoder's own rule);
    the prefix (class-token) positions are kept."""
    return resize_pos_embed(
        pos_embed,
        num_prefix,
        grid,
        lambda sq: F.interpolate(sq, size=(grid, grid), mode="bilinear", align_corners=False),
    )


class ZooEncoder(nn.Module):
    """A timm ViT mapped to patch features: the tokens of ``tokens(vit, x)`` (default: timm's
    ``forward_features``, i.e. with the model's final norm), prefix tokens dropped, optionally
    L2-normalised per token. Each family of ``no_time_to_train.encoders`` says which.

    Args:
        vit: the timm model (``Eva`` for DINOv3 and PE, ``VisionTransformer`` for CLIP).
        img_size, patch_size: the input side and the patch side; ``img_size % patch_size == 0``.
        mean, std: the pixel statistics images are normalised with.
        tokens: ``(vit, normalised (B, 3, S, S)) -> (B, prefix + g*g, D)``.
        l2_normalize: normalise every output token to unit length (CLIP, as the reference).
    """

    def __init__(self, vit: nn.Module, img_size: int, patch_size: int, mean: Sequence[float], std: Sequence[float],
                 tokens: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                 l2_normalize: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.vit = vit
        self._tokens = tokens
        self.l2_normalize = l2_normalize
        self.feat_dim = int(vit.embed_dim)
        self.patch_size = int(patch_size)
        self.img_size = int(img_size)
        self.grid_size = self.img_size // self.patch_size
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.register_buffer("mean", torch.tensor(tuple(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std)).view(1, 3, 1, 1), persistent=False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` -> ``(B, prefix + g*g, D)`` tokens."""
        return self._tokens(self.vit, x) if self._tokens is not None else self.vit.forward_features(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, g, g, D)``; images of another size are resized
        bicubically (``align_corners=False``, no antialias) to ``img_size`` first."""
        x = encoder_input(images, self.img_size, self.mean, self.std)
        patches = self.tokens(x)[:, self.num_prefix_tokens :]
        if self.l2_normalize:
            patches = F.normalize(patches, dim=-1)
        return patches.reshape(x.shape[0], self.grid_size, self.grid_size, self.feat_dim)
