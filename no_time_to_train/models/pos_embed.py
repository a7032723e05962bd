"""Resizing a square absolute position embedding to another patch grid (one rule per family is
passed in: DINOv2's bicubic with Meta's offset, Perception Encoder's bilinear)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def resize_pos_embed(pos_embed: torch.Tensor, num_prefix: int, grid: int,
                     resize: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """``(1, num_prefix + M*M, D)`` -> ``(1, num_prefix + grid*grid, D)`` in the input dtype.

    The ``M x M`` patch part goes through ``resize`` as a float32 ``(1, D, M, M)`` image, which must
    return ``(1, D, grid, grid)``; the prefix (class-token) positions are kept. At ``grid == M``
    the embedding is returned unchanged.
    """
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patches is not square")
    if grid == side:
        return pos_embed
    dim = patches.shape[-1]
    resized = resize(patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2))
    if resized.shape[-2:] != (grid, grid):
        raise ValueError(f"interpolated grid {tuple(resized.shape[-2:])} != ({grid}, {grid})")
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([prefix.float(), resized], dim=1).to(pos_embed.dtype)
