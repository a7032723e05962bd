"""Strict loaders for the frozen backbones: SAM2 (official ``sam2`` package) and DINOv2 (timm).

Both load Meta's official checkpoint files strictly (every key present, no extra keys, every shape
equal), always with ``map_location="cpu"`` and ``weights_only=True``, and turn every failure into
a :class:`~no_time_to_train.errors.CheckpointError` that names the path, the file that was expected
and where to download it (``checkpoints.registry``). ``ckpt_path=None`` gives randomly initialised
weights (tests, timing).

``sam2`` and ``timm`` are imported inside the functions: ``import sam2`` initialises Hydra
globally, and importing this module must have no side effects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from no_time_to_train.checkpoints.registry import (
    DINOV2_VARIANTS,
    SAM2_CHECKPOINT_FILES,
    block_count,
    download_hint,
    resolve_sam2_config,
    sam2_config_of,
    sam2_trunk,
)  # fmt: skip
from no_time_to_train.compat import ensure_sam2_hydra
from no_time_to_train.errors import CheckpointError, ConfigError
from no_time_to_train.io_utils import load_tensors
from no_time_to_train.models.dinov2 import DinoV2Encoder

# ---------------------------------------------------------------------------------------------
# Shared checkpoint helpers
# ---------------------------------------------------------------------------------------------


def require_file(path: Path, what: str, hint: str) -> None:
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"{what} checkpoint {problem}: {path}. {hint}")


def read_checkpoint(path: Path, what: str, hint: str) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; unreadable files become CheckpointError."""
    try:
        return load_tensors(path)
    except Exception as err:  # truncated zip, pickle garbage, a non-tensor payload, ...
        raise CheckpointError(
            f"{what} checkpoint {path} cannot be read ({type(err).__name__}: {brief(err, 200)}). "
            f"The file is probably truncated or corrupt (an interrupted download?): delete it and "
            f"download it again. {hint}"
        ) from err


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def brief(err: BaseException, limit: int = 300) -> str:
    """One line of at most ``limit`` characters from an exception message."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _examples(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
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


def _describe_sam2_state_dict(state_dict: Mapping[str, Any]) -> str:
    trunk = sam2_trunk(state_dict)
    if trunk is None:
        return "it does not look like a SAM2 checkpoint (no image_encoder.trunk weights)"
    name = sam2_config_of(state_dict)
    if name is None:
        return f"its Hiera trunk (width {trunk[0]}, {trunk[1]} blocks) matches no known SAM2 size"
    return (
        f"it looks like {SAM2_CHECKPOINT_FILES[name].file_name}, the checkpoint of {name} "
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
    hint = download_hint(variant.file_name, variant.url, variant.download_flag)
    state_dict = None
    if ckpt_path is not None:
        path = Path(ckpt_path)
        require_file(path, f"SAM2 ({name})", hint)
        checkpoint = read_checkpoint(path, f"SAM2 ({name})", hint)
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
        mismatch = state_dict_mismatch(model.state_dict(), state_dict)
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


def _describe_dinov2_state_dict(state_dict: Any, expected: str) -> str:
    if not isinstance(state_dict, Mapping):
        return f"it holds a {type(state_dict).__name__}, not a state dict"
    pos = state_dict.get("pos_embed")
    if not isinstance(pos, torch.Tensor):
        keys = _examples(sorted(map(str, state_dict)))
        return f"it does not look like a DINOv2 checkpoint (no pos_embed; keys: {keys})"
    from no_time_to_train.encoders.dinov2 import identify

    dim, depth = pos.shape[-1], block_count(state_dict, "blocks.")
    found = identify(state_dict)
    if found == expected:
        return f"its layout (width {dim}, {depth} blocks) is that of {found}, yet it does not load"
    if found is not None:
        return f"it looks like {DINOV2_VARIANTS[found].file_name} ({found}: width {dim}, {depth} blocks)"
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
    from no_time_to_train.encoders import check_input_size

    check_input_size(name, img_size)
    hint = download_hint(variant.file_name, variant.url, variant.download_flag)
    what = f"DINOv2 ({name})"
    import timm

    if ckpt_path is None:
        vit = timm.create_model(variant.timm_name, pretrained=False)
    else:
        path = Path(ckpt_path)
        require_file(path, what, hint)
        try:
            vit = timm.create_model(
                variant.timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
            )
        except Exception as err:
            state_dict = read_checkpoint(path, what, hint)  # raises for unreadable files
            raise CheckpointError(
                f"{what} checkpoint {path} does not match {name} ({variant.timm_name}): "
                f"{_describe_dinov2_state_dict(state_dict, name)}. timm reported: {brief(err).rstrip('.')}. "
                f"{hint}"
            ) from err
    vit.eval()
    vit.requires_grad_(False)
    encoder = DinoV2Encoder(vit, img_size=img_size)
    encoder.eval()
    return encoder
