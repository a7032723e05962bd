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


def square_tensor(img: Image.Image, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """The whole image squashed to ``size x size`` (bicubic, aspect ratio not kept, as the
    reference) as ``(3, size, size)`` in [0, 1], and its original ``(H, W)``."""
    return pil_to_tensor(img.resize((size, size), Image.BICUBIC)), (img.height, img.width)


def load_square(path: str, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    return square_tensor(load_rgb(path), size)


def as_pil_rgb(image: str | os.PathLike | np.ndarray | Image.Image) -> Image.Image:
    """A path, a PIL image or an ``(H, W[, C])`` array (uint8, or float in [0, 1]) as 8-bit RGB."""
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(os.fspath(image))
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return as_pil_rgb(np.asarray(image))
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DatasetError(
            f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}."
        )
    arr = arr[..., :3]
    if arr.dtype.kind == "f":
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        # 16/32-bit data: scale the image's range to 8 bits (as load_rgb does for such files).
        peak = max(float(arr.max()), 1.0) if arr.size else 1.0
        arr = (arr.astype(np.float64) * (255.0 / peak)).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")
