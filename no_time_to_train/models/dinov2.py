"""DINOv2 as a patch-feature encoder: a timm ViT, images in [0, 1] -> final-norm patch tokens.

Pure torch: building it from Meta's files is ``checkpoints.loading.build_dinov2`` (the ``dinov2``
family of ``no_time_to_train.encoders``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.models.pixel_stats import IMAGENET_MEAN, IMAGENET_STD, encoder_input
from no_time_to_train.models.pos_embed import resize_pos_embed


def dinov2_interpolate_pos_embed(
    pos_embed: torch.Tensor, num_prefix: int, grid: int, *, offset: float, antialias: bool
) -> torch.Tensor:
    """Resize a square position embedding the way Meta's DINOv2 does at other input sizes.

    Meta's ``interpolate_pos_encoding`` resizes the ``M x M`` patch part bicubically with
    ``scale_factor=(grid + offset) / M`` when ``offset`` is non-zero (0.1 for the plain models),
    otherwise with ``size=grid`` (0 with ``antialias=True`` for the register models); the
    prefix (class-token) positions are kept. At ``grid == M`` the embedding is returned unchanged.

    Args:
        pos_embed: ``(1, num_prefix + M*M, D)``.
        num_prefix: leading positions that are not patches (1 for the class token, or 0).
        grid: target patches per side.

    Returns:
        ``(1, num_prefix + grid*grid, D)`` in the input dtype.
    """

    def resize(square: torch.Tensor) -> torch.Tensor:
        if offset:
            scale = (grid + offset) / square.shape[-1]
            return F.interpolate(square, scale_factor=(scale, scale), mode="bicubic", antialias=antialias)
        return F.interpolate(square, size=(grid, grid), mode="bicubic", antialias=antialias)

    return resize_pos_embed(pos_embed, num_prefix, grid, resize)


class DinoV2Encoder(nn.Module):
    """A timm DINOv2 ViT that maps images in [0, 1] to its final-LayerNorm patch tokens.

    Args:
        vit: a timm ``VisionTransformer`` built at its native 518 x 518 input (37 x 37 patches).
        img_size: the side every image is resized to; a multiple of 14. At sizes other than 518
            the position embedding is resized once, here, with Meta's formula (see
            :func:`dinov2_interpolate_pos_embed`), so features match Meta's own model.

    Attributes:
        feat_dim: D, the token width. patch_size: 14. img_size. grid_size: ``img_size // 14``.
        num_prefix_tokens: class token + register tokens, dropped from the output.
    """

    patch_size = 14

    def __init__(self, vit: nn.Module, img_size: int = 518) -> None:
        super().__init__()
        self.vit = vit
        self.feat_dim = int(vit.embed_dim)
        self.img_size = int(img_size)
        self.grid_size = self.img_size // self.patch_size
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        native_grid = tuple(vit.patch_embed.grid_size)
        if native_grid != (self.grid_size, self.grid_size):
            self._install_meta_pos_embed()

    def _install_meta_pos_embed(self) -> None:
        vit = self.vit
        native = vit.pos_embed.detach().clone()
        has_registers = vit.reg_token is not None
        num_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        # set_input_size updates the patch embedding's size checks; its own (timm) resampling of
        # the position embedding is then replaced by Meta's.
        vit.set_input_size(img_size=(self.img_size, self.img_size))
        resized = dinov2_interpolate_pos_embed(
            native,
            num_prefix,
            self.grid_size,
            offset=0.0 if has_registers else 0.1,
            antialias=has_registers,
        )
        vit.pos_embed = nn.Parameter(resized, requires_grad=vit.pos_embed.requires_grad)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float in [0, 1], not normalised -> ``(B, grid, grid, D)`` patch tokens.

        Images are resized bicubically (``align_corners=False``, no antialias) to ``img_size``
        when needed, then ImageNet-normalised.
        """
        x = encoder_input(images, self.img_size, self.mean, self.std)
        tokens = self.vit.forward_features(x)[:, self.num_prefix_tokens :]
        return tokens.reshape(x.shape[0], self.grid_size, self.grid_size, self.feat_dim)
