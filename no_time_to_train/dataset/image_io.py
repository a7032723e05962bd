"""Image reading with clear errors, and the resizes used by the datasets."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError


def load_rgb(path: str) -> Image.Image:
    """Open ``path`` as an 8-bit RGB PIL image (grayscale, palette, RGBA and 16-bit inputs are
    converted; alpha is dropped). Raises DatasetError naming the file."""
    if not os.path.isfile(path):
        raise DatasetError(
            f"Image not found: {path}. Check the dataset `root` flag and the json's file_name."
        )
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"Could not read image {path} ({e}); the file is corrupt or not an image.") from e
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of letting PIL clip at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size and arr.max() > 0 else 1.0
        img = Image.fromarray((arr * (255.0 / peak)).round().astype(np.uint8))
    return img.convert("RGB")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` float32 in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_square(path: str, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """The whole image squashed to ``size x size`` (bicubic, aspect ratio not kept, as the
    reference) and its original ``(H, W)``."""
    img = load_rgb(path)
    ori = (img.height, img.width)
    return pil_to_tensor(img.resize((size, size), Image.BICUBIC)), ori
