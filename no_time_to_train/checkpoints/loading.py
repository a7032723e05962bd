"""Builders for the two frozen backbones: SAM2 (official ``sam2`` package) and DINOv2 (timm).

Both builders load Meta's official checkpoint files strictly (every key present, no extra keys,
every shape equal), always with ``map_location="cpu"``, and turn every failure into a
:class:`~no_time_to_train.errors.CheckpointError` that names the path, the file that was expected
and where to download it. ``ckpt_path=None`` gives randomly initialised weights (tests, timing).

``sam2`` and ``timm`` are imported inside the functions: ``import sam2`` initialises Hydra
globally, and importing this module must have no side effects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.compat import ensure_sam2_hydra
from no_time_to_train.errors import CheckpointError, ConfigError

__all__ = [
    "DINOV2_VARIANTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAM2_CHECKPOINT_FILES",
    "DinoV2Encoder",
    "DinoV2Variant",
    "Sam2Variant",
    "build_dinov2",
    "build_sam2",
    "dinov2_interpolate_pos_embed",
    "resolve_sam2_config",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DOWNLOAD_SCRIPT = "checkpoints/download_checkpoints.sh"

# ---------------------------------------------------------------------------------------------
# Known variants
# ---------------------------------------------------------------------------------------------

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
_SAM2_TRUNK_SIGNATURES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
# Folders a config name may be given with, per SAM2 version ("sam2_configs" is the reference's).
_SAM2_CONFIG_DIRS = {"sam2": ("", "configs/sam2", "sam2_configs"), "sam2.1": ("", "configs/sam2.1")}


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


def _download_hint(file_name: str, url: str, flag: str) -> str:
    command = f"bash {DOWNLOAD_SCRIPT}" + (f" {flag}" if flag else "")
    return (
        f"The official file is {file_name}, from {url}. Download it with `{command}` "
        f"(see checkpoints/README.md), or pass the path of your copy."
    )


# ---------------------------------------------------------------------------------------------
# Shared checkpoint helpers
# ---------------------------------------------------------------------------------------------


def _require_file(path: Path, what: str, hint: str) -> None:
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"{what} checkpoint {problem}: {path}. {hint}")


def _read_checkpoint(path: Path, what: str, hint: str) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; unreadable files become CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, a non-tensor payload, ...
        raise CheckpointError(
            f"{what} checkpoint {path} cannot be read ({type(err).__name__}: {_brief(err, 200)}). "
            f"The file is probably truncated or corrupt (an interrupted download?): delete it and "
            f"download it again. {hint}"
        ) from err


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _brief(err: BaseException, limit: int = 300) -> str:
    """One line of at most ``limit`` characters from an exception message."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _examples(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
    """Describe how ``found`` differs from ``expected`` (keys and shapes), or None if it matches."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong_shape = [
        f"{k} {_shape(found[k])} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and _shape(found[k]) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} shape mismatches, file vs model ({_examples(wrong_shape, 2)})")
    return "; ".join(parts) or None


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _block_count(keys: Any, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(str(k)))}
    return max(indices) + 1 if indices else 0


# ---------------------------------------------------------------------------------------------
# SAM2
# ---------------------------------------------------------------------------------------------


def resolve_sam2_config(cfg_file: str) -> str:
    """Normalise a SAM2 config name to a key of :data:`SAM2_CHECKPOINT_FILES`.

    Accepts ``sam2_hiera_{t,s,b+,l}.yaml`` (SAM2.0) and ``sam2.1_hiera_{t,s,b+,l}.yaml`` (SAM2.1),
    bare or with the package folder (``configs/sam2/``, ``configs/sam2.1/``; also the reference's
    ``sam2_configs/``).
    """
    normalised = str(cfg_file).strip().replace("\\", "/").removeprefix("./")
    folder, _, name = normalised.rpartition("/")
    variant = SAM2_CHECKPOINT_FILES.get(name)
    if variant is None or folder not in _SAM2_CONFIG_DIRS[variant.version]:
        valid = ", ".join(SAM2_CHECKPOINT_FILES)
        raise ConfigError(
            f"Unknown SAM2 config {cfg_file!r} (model_cfg.sam2_cfg_file). Valid names: {valid} "
            f"(optionally prefixed with configs/sam2/ or configs/sam2.1/ to match the version)."
        )
    return name


def _describe_sam2_state_dict(state_dict: Mapping[str, Any]) -> str:
    weight = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(weight, torch.Tensor):
        return "it does not look like a SAM2 checkpoint (no image_encoder.trunk weights)"
    blocks = _block_count(state_dict, "image_encoder.trunk.blocks.")
    size = _SAM2_TRUNK_SIGNATURES.get((weight.shape[0], blocks))
    if size is None:
        return f"its Hiera trunk (width {weight.shape[0]}, {blocks} blocks) matches no known SAM2 size"
    version = "sam2.1" if "no_obj_embed_spatial" in state_dict else "sam2"
    variant = SAM2_CHECKPOINT_FILES[f"{version}_hiera_{size}.yaml"]
    return (
        f"it looks like {variant.file_name}, the checkpoint of {version}_hiera_{size}.yaml "
        f"(another model size or SAM2 version)"
    )


def build_sam2(
    cfg_file: str, ckpt_path: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Build the official ``SAM2Base`` from a config name and load Meta's checkpoint strictly.

    Args:
        cfg_file: ``sam2_hiera_{t,s,b+,l}.yaml`` or ``sam2.1_hiera_{t,s,b+,l}.yaml`` (see
            :func:`resolve_sam2_config`).
        ckpt_path: Meta's ``{"model": state_dict}`` file, or None for random weights.
        device: where the model goes (always explicit; the sam2 package defaults to "cuda").

    Returns:
        ``sam2.modeling.sam2_base.SAM2Base`` in eval mode with ``requires_grad=False``. Built
        without the video-predictor post-processing overrides, which the image path never uses.
    """
    name = resolve_sam2_config(cfg_file)
    variant = SAM2_CHECKPOINT_FILES[name]
    hint = _download_hint(variant.file_name, variant.url, variant.download_flag)
    state_dict = None
    if ckpt_path is not None:
        path = Path(ckpt_path)
        _require_file(path, f"SAM2 ({name})", hint)
        checkpoint = _read_checkpoint(path, f"SAM2 ({name})", hint)
        if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
            found = sorted(checkpoint)[:5] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise CheckpointError(
                f"SAM2 checkpoint {path} is not in Meta's format (a dict with a 'model' state dict); "
                f"found {found}. {hint}"
            )
        state_dict = checkpoint["model"]

    ensure_sam2_hydra()
    from sam2.build_sam import build_sam2 as official_build_sam2

    model = official_build_sam2(
        variant.config, ckpt_path=None, device=device, mode="eval", apply_postprocessing=False
    )
    if state_dict is not None:
        mismatch = _state_dict_mismatch(model.state_dict(), state_dict)
        if mismatch is not None:
            raise CheckpointError(
                f"SAM2 checkpoint {ckpt_path} does not match the config {name}: {mismatch}. "
                f"{_sentence(_describe_sam2_state_dict(state_dict))} Use the config that belongs "
                f"to the checkpoint, or the checkpoint that belongs to {name}. {hint}"
            )
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# DINOv2
# ---------------------------------------------------------------------------------------------


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
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise ValueError(f"position embedding of {patches.shape[1]} patches is not square")
    if grid == side:
        return pos_embed
    dim = patches.shape[-1]
    square = patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if offset:
        scale = (grid + offset) / side
        resized = F.interpolate(square, scale_factor=(scale, scale), mode="bicubic", antialias=antialias)
    else:
        resized = F.interpolate(square, size=(grid, grid), mode="bicubic", antialias=antialias)
    if resized.shape[-2:] != (grid, grid):
        raise ValueError(f"interpolated grid {tuple(resized.shape[-2:])} != ({grid}, {grid})")
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([prefix.float(), resized], dim=1).to(pos_embed.dtype)


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
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        size = self.img_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bicubic", align_corners=False, antialias=False
            )
        x = (images - self.mean) / self.std
        tokens = self.vit.forward_features(x)[:, self.num_prefix_tokens :]
        return tokens.reshape(x.shape[0], self.grid_size, self.grid_size, self.feat_dim)


def _describe_dinov2_state_dict(state_dict: Any, expected: str) -> str:
    if not isinstance(state_dict, Mapping):
        return f"it holds a {type(state_dict).__name__}, not a state dict"
    pos = state_dict.get("pos_embed")
    if not isinstance(pos, torch.Tensor):
        keys = _examples(sorted(map(str, state_dict)))
        return f"it does not look like a DINOv2 checkpoint (no pos_embed; keys: {keys})"
    dim, depth = pos.shape[-1], _block_count(state_dict, "blocks.")
    registers = 4 if ("register_tokens" in state_dict or "reg_token" in state_dict) else 0
    for name, variant in DINOV2_VARIANTS.items():
        if (variant.feat_dim, variant.depth, variant.registers) == (dim, depth, registers):
            if name == expected:
                return f"its layout (width {dim}, {depth} blocks) is that of {name}, yet it does not load"
            return f"it looks like {variant.file_name} ({name}: width {dim}, {depth} blocks)"
    return f"it holds a ViT of width {dim} with {depth} blocks, which matches no DINOv2 variant"


def build_dinov2(name: str, ckpt_path: str | os.PathLike | None, img_size: int = 518) -> DinoV2Encoder:
    """Build a frozen DINOv2 encoder through timm and load Meta's official ``.pth`` strictly.

    Args:
        name: a key of :data:`DINOV2_VARIANTS` (``dinov2_{small,base,large,giant}[_reg]``).
        ckpt_path: Meta's ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``, or None for random weights.
            timm's checkpoint filter converts Meta's keys (``register_tokens``, ``w12``/``w3``,
            ``mask_token``); loading is strict.
        img_size: input side, a multiple of 14 (518 = the native 37 x 37 grid).
    """
    variant = DINOV2_VARIANTS.get(name)
    if variant is None:
        raise ConfigError(
            f"Unknown encoder {name!r} (model_cfg.encoder_cfg.name). Valid names: "
            f"{', '.join(DINOV2_VARIANTS)}."
        )
    if img_size <= 0 or img_size % DinoV2Encoder.patch_size:
        raise ConfigError(
            f"encoder img_size must be a positive multiple of {DinoV2Encoder.patch_size} "
            f"(518 = 37 x 14 is DINOv2's native size), got {img_size}."
        )
    hint = _download_hint(variant.file_name, variant.url, variant.download_flag)
    what = f"DINOv2 ({name})"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm

    if ckpt_path is None:
        vit = timm.create_model(variant.timm_name, pretrained=False)
    else:
        path = Path(ckpt_path)
        _require_file(path, what, hint)
        try:
            vit = timm.create_model(
                variant.timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
            )
        except Exception as err:
            state_dict = _read_checkpoint(path, what, hint)  # raises for unreadable files
            raise CheckpointError(
                f"{what} checkpoint {path} does not match {name} ({variant.timm_name}): "
                f"{_describe_dinov2_state_dict(state_dict, name)}. timm reported: {_brief(err).rstrip('.')}. "
                f"{hint}"
            ) from err
    vit.eval()
    vit.requires_grad_(False)
    encoder = DinoV2Encoder(vit, img_size=img_size)
    encoder.eval()
    return encoder
