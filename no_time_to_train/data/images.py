"""Image reading with clear errors, and the resizes used by the datasets."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from no_time_to_train.errors import DatasetError

MAX_PIXELS_ENV = "NTT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 150_000_000
"""Largest image read (width x height): about 12000 x 12500. Far above any camera image this
method is used on (a 6000 x 4000 photo is 24 megapixels), far below what a decompression bomb (a
small file that decodes to gigabytes) asks for. Raise it with the environment variable."""


def max_image_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(value))
    except ValueError:
        raise DatasetError(
            f"{MAX_PIXELS_ENV}={value!r} is not a number of pixels (e.g. 300000000)."
        ) from None


def _open_lazily(path: str) -> Image.Image:
    """``Image.open`` reads only the header; PIL's own bomb check is replaced by ours."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def load_rgb(path: str, hint: str = "Check the dataset `root` flag and the json's file_name.") -> Image.Image:
    """Open ``path`` as an 8-bit RGB PIL image (grayscale, palette, RGBA and 16-bit inputs are
    converted; alpha is dropped). Raises DatasetError naming the file, also for an image larger
    than ``max_image_pixels()`` (checked on the header, before any pixel is decoded)."""
    if not os.path.isfile(path):
        raise DatasetError(f"Image not found: {path}. {hint}")
    try:
        img = _open_lazily(path)
        limit = max_image_pixels()
        if img.width * img.height > limit:
            raise DatasetError(
                f"{path} is {img.width}x{img.height} ({img.width * img.height / 1e6:.0f} megapixels), more than "
                f"the limit of {limit / 1e6:.0f} megapixels that guards against decompression bombs. If the image "
                f"is genuine, raise the limit: {MAX_PIXELS_ENV}={img.width * img.height} (environment variable)."
            )
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"Could not read image {path} ({e}); the file is corrupt or not an image.") from e
    if img.mode in HIGH_BIT_MODES:
        img = Image.fromarray(to_uint8(np.asarray(img)))  # PIL would clip at 255
    return img.convert("RGB")


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_BIT_DEPTHS = (8, 10, 12, 14, 16, 24, 32)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """8-bit version of a high-bit-depth (integer) or float image array.

    Integers are scaled by the smallest common sensor range that holds the image's maximum
    (2^8, 2^10, 2^12, 2^14, 2^16, ... - 1): full-range 16-bit data maps exactly to ``v / 257``, 12-bit
    data stored in 16-bit files is not left nearly black, and images of one camera keep their
    relative brightness (no per-image stretching). Floats are taken as [0, 1]. Negative values
    clip to 0.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        return (np.nan_to_num(np.clip(arr, 0, 1)) * 255).round().astype(np.uint8)
    peak = float(arr.max()) if arr.size else 0.0
    top = next((2.0**b - 1 for b in _BIT_DEPTHS if peak <= 2.0**b - 1), peak)
    return (np.clip(arr.astype(np.float64), 0, None) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)


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
        if image.mode in HIGH_BIT_MODES:
            return as_pil_rgb(np.asarray(image))
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DatasetError(
            f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}."
        )
    arr = to_uint8(arr[..., :3])  # 16/32-bit data scaled as load_rgb does for such files
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")
