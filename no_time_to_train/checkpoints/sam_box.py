"""SAM (v1) and SAM2 checkpoints for box prompts: which model a file holds, and strict loading.

Used by the box-to-mask tool (``no_time_to_train/dataset/sam_bbox_to_segm_batch.py``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from no_time_to_train.checkpoints.loading import state_dict_mismatch
from no_time_to_train.checkpoints.registry import (
    SAM1_CHECKPOINTS,
    SAM1_URL,
    SAM1_WIDTHS,
    SAM2_CHECKPOINT_FILES,
    SAM2_LONG_SIZES,
    resolve_sam2_config,
    sam2_config_of,
)  # fmt: skip
from no_time_to_train.errors import CheckpointError, ConfigError, UserInputError
from no_time_to_train.io_utils import load_tensors
from no_time_to_train.models.box_prompt import (
    MAX_BOXES_PER_CALL,
    BoxPromptSegmenter,
    Sam1BoxSegmenter,
    Sam2BoxSegmenter,
)


@dataclass(frozen=True)
class SamModelSpec:
    """Which segmenter to build: ``family`` "sam1" (``name`` = vit_h/l/b) or "sam2" (config name)."""

    family: str
    name: str

    @property
    def file_name(self) -> str:
        if self.family == "sam1":
            return SAM1_CHECKPOINTS[self.name]
        return SAM2_CHECKPOINT_FILES[self.name].file_name

    @property
    def url(self) -> str:
        if self.family == "sam1":
            return f"{SAM1_URL}/{self.file_name}"
        return SAM2_CHECKPOINT_FILES[self.name].url

    def describe(self) -> str:
        return f"SAM {self.name}" if self.family == "sam1" else f"SAM2 {self.name}"


def _valid_model_types() -> str:
    return "auto, " + ", ".join(SAM1_CHECKPOINTS) + ", " + ", ".join(SAM2_CHECKPOINT_FILES)


def _spec_from_file_name(path: str | os.PathLike) -> SamModelSpec | None:
    """Recognise Meta's checkpoint names (``sam_vit_h_4b8939.pth``, ``sam2.1_hiera_large.pt``, ...)."""
    name = Path(path).name.lower()
    match = re.search(r"sam2(\.1)?_hiera_(tiny|small|base_plus|large)", name)
    if match:
        version = "sam2.1" if match.group(1) else "sam2"
        return SamModelSpec("sam2", f"{version}_hiera_{SAM2_LONG_SIZES[match.group(2)]}.yaml")
    match = re.search(r"sam_(vit_[hlb])(?![a-z0-9])", name)
    if match:
        return SamModelSpec("sam1", match.group(1))
    return None


def _spec_from_content(path: Path) -> SamModelSpec | None:
    """Recognise a checkpoint by its weights (reads the file; memory-mapped when possible)."""
    try:
        ckpt = load_tensors(path, mmap=True)
    except Exception:
        return None
    if not isinstance(ckpt, dict):
        return None
    if isinstance(ckpt.get("model"), dict):
        name = sam2_config_of(ckpt["model"])
        return SamModelSpec("sam2", name) if name else None
    weight = ckpt.get("image_encoder.patch_embed.proj.weight")
    if isinstance(weight, torch.Tensor) and int(weight.shape[0]) in SAM1_WIDTHS:
        return SamModelSpec("sam1", SAM1_WIDTHS[int(weight.shape[0])])
    return None


def _missing_checkpoint(path: Path, spec: SamModelSpec | None) -> CheckpointError:
    problem = "is a folder, not a file" if path.is_dir() else "not found"
    if spec is not None:
        hint = (
            f"The official {spec.describe()} checkpoint is {spec.file_name}: download it with "
            f"`wget {spec.url} -O {path}`"
        )
        if spec.family == "sam2":
            hint += " (or `bash checkpoints/download_checkpoints.sh`, see checkpoints/README.md)"
    else:
        sam1, sam2 = SamModelSpec("sam1", "vit_h"), SamModelSpec("sam2", "sam2_hiera_l.yaml")
        hint = f"Download SAM-H from {sam1.url} or SAM2-L from {sam2.url}"
    return CheckpointError(f"SAM checkpoint {problem}: {path}. {hint}.")


def resolve_model_type(model_type: str | None, checkpoint: str | os.PathLike) -> SamModelSpec:
    """Decide which model ``--model_type`` and ``--sam_checkpoint`` describe.

    ``vit_h``/``vit_l``/``vit_b`` select SAM (v1); a SAM2 config name (``sam2_hiera_l.yaml``,
    ``sam2.1_hiera_t.yaml``, optionally with its ``configs/...`` folder) selects SAM2; ``auto``
    (or ``sam2`` / ``sam2.1``) reads the model from the checkpoint's file name, then its weights.

    Raises:
        CheckpointError: the checkpoint is missing (the message names the file to download).
        ConfigError: an unknown model type, or one that contradicts the checkpoint's name.
    """
    path = Path(checkpoint)
    requested = (model_type or "auto").strip()
    key = requested.lower()
    by_name = _spec_from_file_name(path)

    if key in SAM1_CHECKPOINTS:
        spec = SamModelSpec("sam1", key)
        if by_name is not None and by_name.family == "sam2":
            raise ConfigError(
                f"--model_type {requested} is a SAM (v1) model, but {path.name} is the SAM2 checkpoint of "
                f"{by_name.name}: pass --model_type {by_name.name} (or leave --model_type out)."
            )
    elif key.endswith(".yaml"):
        spec = SamModelSpec("sam2", resolve_sam2_config(requested))
        if by_name is not None and by_name.family == "sam1":
            raise ConfigError(
                f"--model_type {requested} is a SAM2 config, but {path.name} is the SAM (v1) checkpoint of "
                f"{by_name.name}: pass --model_type {by_name.name} (or leave --model_type out)."
            )
    elif key in ("auto", "sam2", "sam2.1"):
        spec = by_name
        if spec is None and path.is_file():
            spec = _spec_from_content(path)
        if not path.is_file():
            raise _missing_checkpoint(path, spec)
        if spec is None:
            raise ConfigError(
                f"Cannot tell which SAM model {path} holds (neither its name nor its weights match a known "
                f"one). Pass --model_type: one of {_valid_model_types()}."
            )
        if key != "auto" and spec.family != "sam2":
            raise ConfigError(
                f"--model_type {requested}: {path.name} is a SAM (v1) checkpoint ({spec.name})."
            )
    else:
        raise ConfigError(f"Unknown --model_type {requested!r}. Valid values: {_valid_model_types()}.")
    if not path.is_file():
        raise _missing_checkpoint(path, spec)
    return spec


def _load_sam1(spec: SamModelSpec, checkpoint: Path, device: str) -> torch.nn.Module:
    try:
        from segment_anything import sam_model_registry
    except ImportError as err:
        raise UserInputError(
            f"--model_type {spec.name} is SAM (v1), which needs the segment-anything package: run "
            "`pip install segment-anything`. Or use SAM2, which is installed: e.g. "
            "--sam_checkpoint checkpoints/sam2_hiera_large.pt --model_type sam2_hiera_l.yaml "
            "(download: bash checkpoints/download_checkpoints.sh)."
        ) from err
    hint = f"The official {spec.describe()} checkpoint is {spec.file_name}, from {spec.url}."
    try:
        state_dict = load_tensors(checkpoint)
    except Exception as err:
        raise CheckpointError(
            f"SAM checkpoint {checkpoint} cannot be read ({type(err).__name__}); it is probably truncated or "
            f"corrupt: delete it and download it again. {hint}"
        ) from err
    if isinstance(state_dict, dict) and isinstance(state_dict.get("model"), dict):
        raise CheckpointError(
            f"{checkpoint} looks like a SAM2 checkpoint ({{'model': ...}}), not SAM {spec.name}: "
            "pass its SAM2 config as --model_type (e.g. sam2_hiera_l.yaml) or leave --model_type out."
        )
    model = sam_model_registry[spec.name]()
    expected = model.state_dict()
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{checkpoint} does not hold a state dict. {hint}")
    mismatch = state_dict_mismatch(expected, state_dict)
    if mismatch is not None:
        guess = _spec_from_content(checkpoint)
        other = f" It looks like {guess.describe()}." if guess is not None and guess != spec else ""
        raise CheckpointError(f"{checkpoint} does not match SAM {spec.name}: {mismatch}.{other} {hint}")
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval().requires_grad_(False)


def build_box_segmenter(
    spec: SamModelSpec,
    checkpoint: str | os.PathLike,
    device: str,
    max_boxes_per_call: int = MAX_BOXES_PER_CALL,
) -> BoxPromptSegmenter:
    """Load the checkpoint strictly (on the CPU first) and wrap the model as a box segmenter."""
    checkpoint = Path(checkpoint)
    if spec.family == "sam1":
        return Sam1BoxSegmenter(_load_sam1(spec, checkpoint, device), max_boxes_per_call)
    from no_time_to_train.checkpoints.loading import build_sam2

    return Sam2BoxSegmenter(build_sam2(spec.name, checkpoint, device=device), max_boxes_per_call)
