"""Every official checkpoint this project knows: variants, file names, download URLs and the
signatures that recognise a file's model. One copy, used by the loaders, the box-to-mask tool, the
random-weight writers and the download script's documentation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from no_time_to_train.errors import ConfigError

DOWNLOAD_SCRIPT = "checkpoints/download_checkpoints.sh"

_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2"


@dataclass(frozen=True)
class DinoV2Variant:
    """One DINOv2 backbone: its timm architecture and Meta's official weight file."""

    timm_name: str
    file_name: str
    feat_dim: int
    depth: int
    registers: int
    url: str
    download_flag: str
    """Option of ``checkpoints/download_checkpoints.sh`` that fetches this file ("" = default set)."""


def _dinov2_variant(size: str, letter: str, dim: int, depth: int, reg: bool, flag: str) -> DinoV2Variant:
    suffix = "_reg4" if reg else ""
    file_name = f"dinov2_vit{letter}14{suffix}_pretrain.pth"
    return DinoV2Variant(
        timm_name=f"vit_{size}_patch14{suffix}_dinov2",
        file_name=file_name,
        feat_dim=dim,
        depth=depth,
        registers=4 if reg else 0,
        url=f"{_DINOV2_URL}/dinov2_vit{letter}14/{file_name}",
        download_flag=flag,
    )


DINOV2_VARIANTS: dict[str, DinoV2Variant] = {
    "dinov2_small": _dinov2_variant("small", "s", 384, 12, False, "--small"),
    "dinov2_base": _dinov2_variant("base", "b", 768, 12, False, "--all"),
    "dinov2_large": _dinov2_variant("large", "l", 1024, 24, False, ""),
    "dinov2_giant": _dinov2_variant("giant", "g", 1536, 40, False, "--all"),
    "dinov2_small_reg": _dinov2_variant("small", "s", 384, 12, True, "--all"),
    "dinov2_base_reg": _dinov2_variant("base", "b", 768, 12, True, "--all"),
    "dinov2_large_reg": _dinov2_variant("large", "l", 1024, 24, True, "--all"),
    "dinov2_giant_reg": _dinov2_variant("giant", "g", 1536, 40, True, "--all"),
}

_SAM2_URLS = {
    "sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824",
    "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824",
}
_SAM2_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
# (trunk embed_dim, number of Hiera blocks) -> size letter, to recognise a checkpoint's model size.
SAM2_TRUNK_SIGNATURES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
# Folders a config name may be given with, per SAM2 version ("sam2_configs" is the reference's).
SAM2_CONFIG_DIRS = {"sam2": ("", "configs/sam2", "sam2_configs"), "sam2.1": ("", "configs/sam2.1")}


@dataclass(frozen=True)
class Sam2Variant:
    """One SAM2 model: the ``sam2`` package config it is built from and Meta's weight file."""

    version: str  # "sam2" (SAM2.0, 07/2024 release) or "sam2.1" (09/2024 release)
    size: str  # "t", "s", "b+" or "l"
    config: str  # config name inside the sam2 package, e.g. "configs/sam2/sam2_hiera_l.yaml"
    file_name: str
    url: str
    download_flag: str


def _sam2_download_flag(version: str, size: str) -> str:
    if size == "l":
        return "" if version == "sam2" else "--sam2.1"
    if size == "t":
        return "--small" if version == "sam2" else "--small --sam2.1"
    return "--all"


SAM2_CHECKPOINT_FILES: dict[str, Sam2Variant] = {
    f"{version}_hiera_{size}.yaml": Sam2Variant(
        version=version,
        size=size,
        config=f"configs/{version}/{version}_hiera_{size}.yaml",
        file_name=f"{version}_hiera_{long_size}.pt",
        url=f"{_SAM2_URLS[version]}/{version}_hiera_{long_size}.pt",
        download_flag=_sam2_download_flag(version, size),
    )
    for version in ("sam2", "sam2.1")
    for size, long_size in _SAM2_SIZES.items()
}
"""Config name (as users write it in ``model_cfg.sam2_cfg_file``) -> official checkpoint."""


def download_hint(file_name: str, url: str, flag: str) -> str:
    command = f"bash {DOWNLOAD_SCRIPT}" + (f" {flag}" if flag else "")
    return (
        f"The official file is {file_name}, from {url}. Download it with `{command}` "
        f"(see checkpoints/README.md), or pass the path of your copy."
    )


SAM1_URL = "https://dl.fbaipublicfiles.com/segment_anything"
SAM1_CHECKPOINTS: dict[str, str] = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
"""SAM (v1) model type -> Meta's checkpoint file (downloadable from ``SAM1_URL``)."""
SAM1_WIDTHS = {1280: "vit_h", 1024: "vit_l", 768: "vit_b"}  # image encoder width -> model type
SAM2_LONG_SIZES = {long: short for short, long in _SAM2_SIZES.items()}  # "large" -> "l"


def resolve_sam2_config(cfg_file: str) -> str:
    """Normalise a SAM2 config name to a key of :data:`SAM2_CHECKPOINT_FILES`.

    Accepts ``sam2_hiera_{t,s,b+,l}.yaml`` (SAM2.0) and ``sam2.1_hiera_{t,s,b+,l}.yaml`` (SAM2.1),
    bare or with the package folder (``configs/sam2/``, ``configs/sam2.1/``; also the reference's
    ``sam2_configs/``).
    """
    normalised = str(cfg_file).strip().replace("\\", "/").removeprefix("./")
    folder, _, name = normalised.rpartition("/")
    variant = SAM2_CHECKPOINT_FILES.get(name)
    if variant is None or folder not in SAM2_CONFIG_DIRS[variant.version]:
        valid = ", ".join(SAM2_CHECKPOINT_FILES)
        raise ConfigError(
            f"Unknown SAM2 config {cfg_file!r} (model_cfg.sam2_cfg_file). Valid names: {valid} "
            f"(optionally prefixed with configs/sam2/ or configs/sam2.1/ to match the version)."
        )
    return name


def block_count(keys: Any, prefix: str) -> int:
    """Number of ``<prefix><i>.`` blocks among state-dict keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(str(k)))}
    return max(indices) + 1 if indices else 0


def sam2_trunk(state_dict: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(width, blocks)`` of a SAM2 state dict's Hiera trunk, or None if it has none."""
    weight = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(weight, torch.Tensor):
        return None
    return int(weight.shape[0]), block_count(state_dict, "image_encoder.trunk.blocks.")


def sam2_config_of(state_dict: Mapping[str, Any]) -> str | None:
    """The config name (``sam2.1_hiera_l.yaml``, ...) whose model a SAM2 state dict holds."""
    trunk = sam2_trunk(state_dict)
    size = SAM2_TRUNK_SIGNATURES.get(trunk) if trunk else None
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in state_dict else "sam2"
    return f"{version}_hiera_{size}.yaml"
