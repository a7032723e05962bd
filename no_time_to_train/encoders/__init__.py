"""Feature encoders as plug-ins: one registered family per kind of backbone.

A family (:class:`EncoderFamily`) holds everything that differs between backbones: its encoder
names (``model_cfg.encoder_cfg.name``) with their token grid, width and official file; how to
build a frozen encoder from the official file, strictly, at any input size; which pixel statistics
it normalises with; how to recognise its official files (checkpoint signature); how to write a
timm model's weights in the official layout (random-weight stand-ins); and a random-weight model
of the official architecture. Every encoder maps ``(B, 3, H, W)`` images in [0, 1] to
``(B, g, g, D)`` patch features, ``g = img_size // patch_size``.

Built-in families: ``dinov2`` (final-norm patch tokens; 518 / 14), ``dinov3`` (last block, final
norm, class and 4 storage tokens dropped; 592 / 16), ``clip`` (OpenAI's ViTs up to the last block,
no ``ln_post`` or projection, class token dropped, every token L2-normalised; 224 or 336), ``pe``
(Perception Encoder Spatial, last block, no final norm; the reference runs it at 518 / 14).

Adding a family: one module in this package that defines its :class:`EncoderFamily` and calls
:func:`register_family`, and its name in :data:`BUILT_IN` at the bottom of this file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from no_time_to_train.errors import ConfigError, lookup
from no_time_to_train.models.pixel_stats import PIXEL_STATS


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder name of ``model_cfg.encoder_cfg.name``."""

    family: str
    timm_name: str
    feat_dim: int
    depth: int
    patch_size: int
    img_size: int  # the reference's input side for this encoder
    native_size: int  # the side its position embedding / RoPE reference grid was trained at
    ckpt_path: str  # where the reference's configs expect the official file
    download: str  # how to obtain the official file


def official_spec(family: str, timm_name: str, dims: tuple[int, int], patch: int, sizes: tuple[int, int],
                  file: str, folder: str, download: str, **fmt: str) -> EncoderSpec:  # fmt: skip
    """A spec whose official ``file`` lives in ``checkpoints/<folder>/``; ``dims`` = (width, depth),
    ``sizes`` = (the reference's input side, the native one); ``download`` is formatted with the
    file name and ``fmt``."""
    return EncoderSpec(family, timm_name, *dims, patch, *sizes, f"./checkpoints/{folder}/{file}",
                       download.format(file=file, **fmt))  # fmt: skip


@dataclass(frozen=True)
class EncoderFamily:
    """One kind of backbone and every encoder name of it."""

    name: str
    encoders: dict[str, EncoderSpec]
    build: Callable[[str, Path | None, int, tuple, tuple], nn.Module]
    """``build(name, official_file_or_None, img_size, mean, std)``: the frozen encoder, loaded
    strictly (None: random weights); CheckpointError naming the file and its source."""
    pixel_stats: str
    """Key of ``models.pixel_stats.PIXEL_STATS`` it normalises with by default (as the reference)."""
    identify: Callable[[Mapping[str, Any]], str | None]
    """The encoder name whose official file has this state dict's layout, or None."""
    to_official: Callable[[str, dict], dict]
    """A timm model's ``state_dict()`` -> the official file's (inverse of timm's filter); works on
    ``meta`` tensors."""
    smallest: str
    """The smallest member (end-to-end tests, benchmark)."""
    subfolder: str
    """Where its official files live under ``checkpoints/``."""
    other_pixel_stats: bool = True
    """Whether ``encoder_cfg.pixel_stats`` may choose other statistics."""
    random_model: Callable[[str, int], nn.Module] | None = None
    """A seeded random-weight timm model of the official architecture (stand-ins, tests); None:
    timm's initialisation with LayerScale gammas and biases drawn (``random_timm_vit``)."""

    def random(self, name: str, seed: int) -> nn.Module:
        if self.random_model is not None:
            return self.random_model(name, seed)
        from no_time_to_train.tools.random_checkpoints import random_timm_vit

        return random_timm_vit(encoder_spec(name).timm_name, seed, draw_biases=True)


FAMILIES: dict[str, EncoderFamily] = {}
ENCODERS: dict[str, EncoderSpec] = {}


def register_family(family: EncoderFamily) -> EncoderFamily:
    """Make ``family``'s encoder names selectable by ``encoder_cfg.name``."""
    FAMILIES[family.name] = family
    for name, spec in family.encoders.items():
        ENCODERS.setdefault(name, spec)
    return family


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of encoder ``name``; ConfigError naming the close match and the valid names."""
    return lookup(ENCODERS, name, "model_cfg.encoder_cfg.name", "a known encoder")


def family_of(name: str) -> EncoderFamily:
    return FAMILIES[encoder_spec(name).family]


def smallest_of_each() -> dict[str, str]:
    """{family: its smallest encoder name}."""
    return {f.name: f.smallest for f in FAMILIES.values()}


def check_input_size(name: str, img_size: int) -> None:
    """The input side must be a positive multiple of the encoder's patch side."""
    spec = encoder_spec(name)
    if img_size <= 0 or img_size % spec.patch_size:
        raise ConfigError(
            f"--model.init_args.model_cfg.encoder_cfg.img_size={img_size} must be a positive multiple of "
            f"{spec.patch_size}, the patch size of {name} (the reference uses {spec.img_size})."
        )


def pixel_stats_of(name: str, choice: str = "default") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) encoder ``name`` normalises with: its family's (as the reference) or ``choice``."""
    family = family_of(name)
    if choice != "default" and not family.other_pixel_stats and choice != family.pixel_stats:
        raise ConfigError(
            f"encoder_cfg.pixel_stats={choice!r}: {family.name} uses its own ({family.pixel_stats}) statistics."
        )
    key = family.pixel_stats if choice == "default" else choice
    if key not in PIXEL_STATS:
        raise ConfigError(
            f"model_cfg.encoder_cfg.pixel_stats={choice!r}; choose default, {', '.join(PIXEL_STATS)}."
        )
    return PIXEL_STATS[key]


def build_encoder(name: str, ckpt_path: str | Path | None, img_size: int | None = None,
                  pixel_stats: str = "default") -> nn.Module:  # fmt: skip
    """The frozen encoder ``name`` from its official file (None: random weights), at ``img_size``
    (default: the reference's for this encoder) with ``pixel_stats`` ("default": the family's)."""
    spec = encoder_spec(name)
    size = int(img_size or spec.img_size)
    check_input_size(name, size)
    mean, std = pixel_stats_of(name, pixel_stats)
    path = None if ckpt_path is None else Path(ckpt_path)
    return family_of(name).build(name, path, size, mean, std)


def identify_checkpoint(state_dict: Mapping[str, Any]) -> str | None:
    """The encoder whose official file has this layout (any family), or None."""
    for family in FAMILIES.values():
        found = family.identify(state_dict)
        if found is not None:
            return found
    return None


def to_official(name: str, state: dict) -> dict:
    """The official file's state dict of encoder ``name`` from its timm model's ``state_dict()``."""
    return family_of(name).to_official(name, state)


BUILT_IN = ("dinov2", "dinov3", "clip", "pe")
"""The families shipped here, in this order (error messages list their names in it)."""

# Each import registers one family.
for _module in BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")
