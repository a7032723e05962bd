"""Turn box-only COCO annotations into instance masks with SAM (v1) or SAM2 box prompts.

Usage (from the repository root)::

    python no_time_to_train/dataset/sam_bbox_to_segm_batch.py \\
        --input_json data/my_custom_dataset/annotations/custom_references.json \\
        --image_dir data/my_custom_dataset/images \\
        --sam_checkpoint checkpoints/sam_vit_h_4b8939.pth \\
        --model_type vit_h --device cuda --batch_size 8 --visualize

Writes ``<input>_with_segm.json`` next to the input: the same json with a ``segmentation``
(polygons) and an ``area`` for every annotation; images, categories and everything else are kept
as they are (images without annotations included, in their original order). With ``--visualize``
the masks are drawn over every annotated image in ``<input stem>_with_SAM_segm/<image>_segm.png``.

Models:

* SAM (v1), ``--model_type vit_h|vit_l|vit_b``, needs the ``segment-anything`` package;
* SAM2 / SAM2.1 through the official ``sam2`` package: ``--model_type sam2_hiera_l.yaml``
  (or ``sam2.1_hiera_l.yaml``, any size t/s/b+/l);
* ``--model_type auto`` (default) recognises the model from the checkpoint's file name
  (``sam_vit_h_4b8939.pth``, ``sam2_hiera_large.pt``, ...) and otherwise from its content.

Every box ``[x, y, w, h]`` becomes the XYXY prompt ``[x, y, x + w, y + h]`` (one mask per box,
``multimask_output=False``). The mask's outer contours (OpenCV, pixel-centre coordinates, i.e.
``+0.5``) with at least 3 points are the polygons; a mask without any such contour gets its box
rectangle as polygon. ``area`` is the number of mask pixels (the box area for the rectangle
fallback, which also covers degenerate boxes, which are not prompted at all).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from no_time_to_train.checkpoints.loading import SAM2_CHECKPOINT_FILES, resolve_sam2_config
from no_time_to_train.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    UserInputError,
    run_reporting_user_errors,
)
from no_time_to_train.io_utils import atomic_open, atomic_save_json
from no_time_to_train.tools.few_shot_sampling import load_coco_json

__all__ = [
    "SAM1_CHECKPOINTS",
    "BoxPromptSegmenter",
    "SamModelSpec",
    "Sam1BoxSegmenter",
    "Sam2BoxSegmenter",
    "SegmentationReport",
    "add_segmentations",
    "build_box_segmenter",
    "main",
    "mask_to_polygons",
    "output_paths",
    "resolve_device",
    "resolve_model_type",
    "sam_bbox_to_segm",
]

Log = Callable[[str], None]

_SAM1_URL = "https://dl.fbaipublicfiles.com/segment_anything"
SAM1_CHECKPOINTS: dict[str, str] = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
"""SAM (v1) model type -> Meta's checkpoint file (downloadable from ``_SAM1_URL``)."""
_SAM1_WIDTHS = {1280: "vit_h", 1024: "vit_l", 768: "vit_b"}  # image encoder width -> model type
_SAM2_LONG_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
# (Hiera trunk width, number of blocks) -> size letter, to recognise an unnamed SAM2 checkpoint.
_SAM2_TRUNKS = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}

MAX_BOXES_PER_CALL = 64
"""Box prompts per mask-decoder call: bounds the memory of the full-resolution masks."""


# ---------------------------------------------------------------------------------------------
# Model selection
# ---------------------------------------------------------------------------------------------


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
            return f"{_SAM1_URL}/{self.file_name}"
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
        return SamModelSpec("sam2", f"{version}_hiera_{_SAM2_LONG_SIZES[match.group(2)]}.yaml")
    match = re.search(r"sam_(vit_[hlb])(?![a-z0-9])", name)
    if match:
        return SamModelSpec("sam1", match.group(1))
    return None


def _spec_from_content(path: Path) -> SamModelSpec | None:
    """Recognise a checkpoint by its weights (reads the file; memory-mapped when possible)."""
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(ckpt, dict):
        return None
    if isinstance(ckpt.get("model"), dict):
        sd = ckpt["model"]
        weight = sd.get("image_encoder.trunk.patch_embed.proj.weight")
        if not isinstance(weight, torch.Tensor):
            return None
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
        size = _SAM2_TRUNKS.get((int(weight.shape[0]), len(blocks)))
        if size is None:
            return None
        version = "sam2.1" if "no_obj_embed_spatial" in sd else "sam2"
        return SamModelSpec("sam2", f"{version}_hiera_{size}.yaml")
    weight = ckpt.get("image_encoder.patch_embed.proj.weight")
    if isinstance(weight, torch.Tensor) and int(weight.shape[0]) in _SAM1_WIDTHS:
        return SamModelSpec("sam1", _SAM1_WIDTHS[int(weight.shape[0])])
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


def resolve_device(requested: str | None, log: Log = print) -> str:
    """``None``/"auto" -> "cuda" if available else "cpu"; an unavailable accelerator falls back
    to the CPU with a notice."""
    if requested is None or requested.strip().lower() in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested.strip())
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--device {requested!r} is not a device name (cuda, cuda:1, cpu, mps).") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            log(f"Notice: --device {requested} was requested but CUDA is not available; running on the CPU.")
            return "cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) visible."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        log(f"Notice: --device {requested} was requested but MPS is not available; running on the CPU.")
        return "cpu"
    return str(device)


# ---------------------------------------------------------------------------------------------
# Segmenters: images + XYXY boxes -> one binary mask per box
# ---------------------------------------------------------------------------------------------


class BoxPromptSegmenter(Protocol):
    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``images``: RGB uint8 ``(H_i, W_i, 3)``; ``boxes``: float ``(N_i, 4)`` XYXY pixels (N_i >= 1).

        Returns one bool array ``(N_i, H_i, W_i)`` per image.
        """
        ...


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


class Sam2BoxSegmenter:
    """Box prompts through the official ``SAM2ImagePredictor`` (one mask per box).

    Images holding at most ``max_boxes_per_call`` boxes are encoded together
    (``set_image_batch`` / ``predict_batch``); an image with more boxes is encoded alone and its
    boxes are decoded in chunks.
    """

    def __init__(self, sam2_model: torch.nn.Module, max_boxes_per_call: int = MAX_BOXES_PER_CALL) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        with warnings.catch_warnings():  # sam2's transforms use torch.jit.script, deprecated in torch 2.x
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            self.predictor = SAM2ImagePredictor(sam2_model)
        self.max_boxes_per_call = max_boxes_per_call

    @staticmethod
    def _as_masks(masks: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        # predict() drops the leading axis for a single box: (1, H, W) vs (N, 1, H, W).
        return np.asarray(masks).reshape(n, -1, h, w)[:, 0] > 0.5

    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(images)
        small = [i for i, b in enumerate(boxes) if len(b) <= self.max_boxes_per_call]
        if small:
            self.predictor.set_image_batch([images[i] for i in small])
            masks, _, _ = self.predictor.predict_batch(
                box_batch=[np.asarray(boxes[i], np.float32) for i in small], multimask_output=False
            )
            for i, m in zip(small, masks, strict=True):
                out[i] = self._as_masks(m, len(boxes[i]), *images[i].shape[:2])
        for i in (i for i in range(len(images)) if out[i] is None):
            h, w = images[i].shape[:2]
            self.predictor.set_image(images[i])
            result = np.zeros((len(boxes[i]), h, w), bool)
            for part in _chunks(len(boxes[i]), self.max_boxes_per_call):
                chunk = np.asarray(boxes[i][part], np.float32)
                m, _, _ = self.predictor.predict(box=chunk, multimask_output=False)
                result[part] = self._as_masks(m, len(chunk), h, w)
            out[i] = result
        self.predictor.reset_predictor()
        return out  # type: ignore[return-value]


class Sam1BoxSegmenter:
    """Box prompts through a ``segment_anything`` ``Sam`` model, batched like ``Sam.forward``.

    The images of a call are encoded in one batch (longest side resized to 1024, padded); each
    image's boxes are then decoded in chunks of ``max_boxes_per_call``.
    """

    def __init__(self, sam_model: torch.nn.Module, max_boxes_per_call: int = MAX_BOXES_PER_CALL) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.max_boxes_per_call = max_boxes_per_call

    @torch.no_grad()
    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        sam = self.sam
        device = sam.device
        inputs = [
            torch.as_tensor(self.transform.apply_image(img), device=device).permute(2, 0, 1).contiguous()
            for img in images
        ]
        embeddings = sam.image_encoder(torch.stack([sam.preprocess(x) for x in inputs]))
        dense_pe = sam.prompt_encoder.get_dense_pe()
        out = []
        for i, (img, img_boxes) in enumerate(zip(images, boxes, strict=True)):
            h, w = img.shape[:2]
            result = np.zeros((len(img_boxes), h, w), bool)
            for part in _chunks(len(img_boxes), self.max_boxes_per_call):
                chunk = torch.as_tensor(np.asarray(img_boxes[part]), dtype=torch.float, device=device)
                sparse, dense = sam.prompt_encoder(
                    points=None, boxes=self.transform.apply_boxes_torch(chunk, (h, w)), masks=None
                )
                low_res, _ = sam.mask_decoder(
                    image_embeddings=embeddings[i : i + 1],
                    image_pe=dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                )
                full = sam.postprocess_masks(
                    low_res, input_size=tuple(inputs[i].shape[-2:]), original_size=(h, w)
                )
                result[part] = (full[:, 0] > sam.mask_threshold).cpu().numpy()
            out.append(result)
        return out


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
        state_dict = torch.load(checkpoint, map_location="cpu", weights_only=True)
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
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        k for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        guess = _spec_from_content(checkpoint)
        other = f" It looks like {guess.describe()}." if guess is not None and guess != spec else ""
        raise CheckpointError(
            f"{checkpoint} does not match SAM {spec.name}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(shapes)} mis-shaped keys "
            f"(e.g. {(missing + unexpected + shapes)[:3]}).{other} {hint}"
        )
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


# ---------------------------------------------------------------------------------------------
# Masks -> COCO annotations
# ---------------------------------------------------------------------------------------------


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a binary ``(H, W)`` mask as COCO polygons ``[x1, y1, x2, y2, ...]``.

    Contours run through pixel centres, so each vertex is ``pixel index + 0.5`` in COCO's
    continuous coordinates; contours with fewer than 3 points (4 values or less) are dropped.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2).astype(np.float64) + 0.5).ravel().tolist() for c in contours if c.size > 4]


def box_polygon(box_xyxy: Sequence[float]) -> list[list[float]]:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _prompt_box(bbox: Sequence[float], width: int, height: int) -> np.ndarray:
    """COCO ``[x, y, w, h]`` -> XYXY clipped to the image."""
    x, y, w, h = (float(v) for v in bbox)
    return np.array(
        [
            min(max(x, 0.0), width),
            min(max(y, 0.0), height),
            min(max(x + w, 0.0), width),
            min(max(y + h, 0.0), height),
        ]
    )


@dataclass
class SegmentationReport:
    data: dict
    """The input json with new ``segmentation`` and ``area`` for every annotation."""
    images_segmented: int
    images_without_annotations: int
    annotations: int
    box_fallbacks: int
    """Annotations whose mask gave no polygon (or whose box is empty): the box rectangle is used."""
    visualisations: list[str]
    size_mismatches: list[str]
    """Images whose pixel size differs from the json's width/height."""


def _image_path(image_dir: Path, info: dict) -> Path:
    name = info.get("file_name") or os.path.basename(str(info.get("coco_url", "")))
    return image_dir / name


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.array(img.convert("RGB"))  # a writable copy (torchvision warns on read-only arrays)


def check_images(
    data: dict, image_dir: str | os.PathLike, where: str = "input json"
) -> dict[Any, list[dict]]:
    """Group the annotations by image and check every annotated image's file exists.

    Returns ``{image_id: [annotations]}`` in json order. Raises DatasetError naming the first
    missing files, or annotations that refer to unknown images or lack a 4-number ``bbox``.
    """
    image_dir = Path(image_dir)
    images = {img["id"]: img for img in data["images"]}
    anns_by_img: dict[Any, list[dict]] = {}
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            raise DatasetError(
                f"{where}: annotation {ann.get('id')!r} refers to unknown image {ann.get('image_id')!r}."
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DatasetError(f"{where}: annotation {ann.get('id')!r} needs a 4-number 'bbox' [x, y, w, h].")
        anns_by_img.setdefault(ann["image_id"], []).append(ann)
    missing = [
        str(_image_path(image_dir, images[i]))
        for i in anns_by_img
        if not _image_path(image_dir, images[i]).is_file()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise DatasetError(
            f"{len(missing)} annotated image(s) of {where} are not in --image_dir {image_dir}: {shown}. "
            "Check --image_dir and the json's file_name entries."
        )
    return anns_by_img


def _colour(i: int) -> tuple[int, int, int]:
    """Distinct deterministic BGR colours (golden-ratio hue steps)."""
    hsv = np.array([[[int((0.13 + 0.618034 * i) % 1.0 * 180), 220, 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_overlay(image_rgb: np.ndarray, masks: np.ndarray, anns: list[dict], cat_names: dict) -> np.ndarray:
    """BGR image with every mask tinted, outlined, its box drawn and its class written."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    tint = canvas.copy()
    for k, mask in enumerate(masks):
        tint[mask] = _colour(k)
    canvas = cv2.addWeighted(canvas, 0.5, tint, 0.5, 0.0)
    for k, (mask, ann) in enumerate(zip(masks, anns, strict=True)):
        colour = _colour(k)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, colour, 2)
        x, y, w, h = (int(round(float(v))) for v in ann["bbox"])
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 1)
        label = str(cat_names.get(ann.get("category_id"), ann.get("category_id")))
        cv2.putText(
            canvas, label, (x + 2, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA
        )
    return canvas


def _write_png(path: Path, image_bgr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise DatasetError(f"Could not encode the visualisation {path}.")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def add_segmentations(
    data: dict,
    image_dir: str | os.PathLike,
    segmenter: BoxPromptSegmenter,
    *,
    batch_size: int = 16,
    vis_dir: str | os.PathLike | None = None,
    progress: bool = True,
    where: str = "input json",
) -> SegmentationReport:
    """Give every annotation of ``data`` a mask from its box (``data`` itself is not modified).

    Args:
        data: a COCO-format json (``images``, ``annotations``, ``categories``).
        image_dir: folder holding the images' ``file_name``.
        segmenter: see :class:`BoxPromptSegmenter`.
        batch_size: images per segmenter call.
        vis_dir: if given, ``<image stem>_segm.png`` overlays are written there.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise UserInputError(f"--batch_size must be at least 1 (got {batch_size}).")
    image_dir = Path(image_dir)
    anns_by_img = check_images(data, image_dir, where)
    images = {img["id"]: img for img in data["images"]}
    cat_names = {c.get("id"): c.get("name") for c in data.get("categories", [])}
    new_anns: dict[int, dict] = {}  # id(original annotation) -> annotation with its mask
    fallbacks, written, mismatches = 0, [], []
    order = [i for i in (img["id"] for img in data["images"]) if i in anns_by_img]
    with tqdm(total=len(order), desc="SAM box -> mask", unit="img", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch_ids = order[start : start + batch_size]
            pixels, prompts, prompted = [], [], []
            for img_id in batch_ids:
                info = images[img_id]
                rgb = _read_rgb(_image_path(image_dir, info))
                h, w = rgb.shape[:2]
                if (info.get("height"), info.get("width")) != (h, w):
                    mismatches.append(
                        f"{info.get('file_name')} ({w}x{h} vs json {info.get('width')}x{info.get('height')})"
                    )
                boxes = [_prompt_box(a["bbox"], w, h) for a in anns_by_img[img_id]]
                keep = [k for k, b in enumerate(boxes) if b[2] > b[0] and b[3] > b[1]]
                pixels.append(rgb)
                prompts.append(np.stack([boxes[k] for k in keep]) if keep else np.zeros((0, 4)))
                prompted.append((keep, boxes))
            with_boxes = [k for k, p in enumerate(prompts) if len(p)]
            results = segmenter.segment([pixels[k] for k in with_boxes], [prompts[k] for k in with_boxes])
            masks_of = dict(zip(with_boxes, results, strict=True))
            for k, img_id in enumerate(batch_ids):
                keep, boxes = prompted[k]
                h, w = pixels[k].shape[:2]
                all_masks = np.zeros((len(boxes), h, w), bool)
                if keep:
                    all_masks[keep] = masks_of[k]
                for mask, box, ann in zip(all_masks, boxes, anns_by_img[img_id], strict=True):
                    polygons = mask_to_polygons(mask)
                    if polygons:
                        area = float(mask.sum())
                    else:
                        polygons, fallbacks = box_polygon(box), fallbacks + 1
                        area = float((box[2] - box[0]) * (box[3] - box[1]))
                    new_anns[id(ann)] = {**ann, "segmentation": polygons, "area": area}
                if vis_dir is not None:
                    path = Path(vis_dir) / f"{Path(images[img_id]['file_name']).stem}_segm.png"
                    _write_png(path, draw_overlay(pixels[k], all_masks, anns_by_img[img_id], cat_names))
                    written.append(str(path))
            bar.update(len(batch_ids))
    out = {**data, "annotations": [new_anns[id(a)] for a in data["annotations"]]}
    return SegmentationReport(
        data=out,
        images_segmented=len(order),
        images_without_annotations=len(data["images"]) - len(order),
        annotations=len(new_anns),
        box_fallbacks=fallbacks,
        visualisations=written,
        size_mismatches=mismatches,
    )


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def output_paths(input_json: str | os.PathLike) -> tuple[Path, Path]:
    """``(<input>_with_segm.json, <input stem>_with_SAM_segm/)``, both next to the input."""
    path = Path(input_json)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(f"{stem}_with_segm.json"), path.with_name(f"{stem}_with_SAM_segm")


def sam_bbox_to_segm(
    input_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    sam_checkpoint: str | os.PathLike,
    model_type: str = "auto",
    device: str | None = None,
    batch_size: int = 16,
    visualize: bool = False,
    output_json: str | os.PathLike | None = None,
    progress: bool = True,
    log: Log = print,
) -> SegmentationReport:
    """Read ``input_json``, segment every box with SAM/SAM2 and write ``<input>_with_segm.json``.

    Inputs are checked (json, images, checkpoint, model type) before the model is built.
    """
    if batch_size < 1:
        raise UserInputError(f"--batch_size must be at least 1 (got {batch_size}).")
    data = load_coco_json(input_json, "Check --input_json.")
    check_images(data, image_dir, str(input_json))
    spec = resolve_model_type(model_type, sam_checkpoint)
    device = resolve_device(device, log)
    default_out, vis_dir = output_paths(input_json)
    out_path = Path(output_json) if output_json else default_out
    log(f"Segmenting the boxes of {input_json} with {spec.describe()} ({sam_checkpoint}) on {device}.")
    segmenter = build_box_segmenter(spec, sam_checkpoint, device)
    report = add_segmentations(
        data, image_dir, segmenter, batch_size=batch_size, vis_dir=vis_dir if visualize else None,
        progress=progress, where=str(input_json),
    )  # fmt: skip
    atomic_save_json(report.data, out_path)
    if report.size_mismatches:
        shown = "; ".join(report.size_mismatches[:3])
        log(
            f"Warning: {len(report.size_mismatches)} image(s) differ in size from the json "
            f"(masks follow the pixels): {shown}"
        )
    log(
        f"Wrote {out_path}: {report.annotations} annotation(s) in {report.images_segmented} image(s) "
        f"segmented ({report.box_fallbacks} box-rectangle fallback(s)); "
        f"{report.images_without_annotations} image(s) without annotations kept."
    )
    if visualize:
        log(f"Wrote {len(report.visualisations)} visualisation(s) to {vis_dir}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Add instance masks (polygons) to the box annotations of a COCO-format json, using SAM "
        "or SAM2 with each box as prompt. Writes <input>_with_segm.json next to the input."
    )
    parser.add_argument("--input_json", required=True, help="COCO-format json with bbox annotations")
    parser.add_argument("--image_dir", required=True, help="folder holding the json's images")
    parser.add_argument(
        "--sam_checkpoint", required=True, help="sam_vit_{h,l,b}_*.pth (SAM) or sam2[.1]_hiera_*.pt (SAM2)"
    )
    parser.add_argument(
        "--model_type",
        default="auto",
        help="vit_h, vit_l, vit_b (SAM; needs `pip install segment-anything`), a SAM2 config such as "
        "sam2_hiera_l.yaml / sam2.1_hiera_l.yaml, or auto (default: from the checkpoint)",
    )
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N, cpu, mps (default: cuda if available, else cpu)"
    )
    parser.add_argument("--batch_size", type=int, default=16, help="images per model call (default 16)")
    parser.add_argument(
        "--visualize",
        action="store_true",
        help="also write <input stem>_with_SAM_segm/<image>_segm.png overlays",
    )
    parser.add_argument("--output_json", default=None, help="output path (default: <input>_with_segm.json)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1 (got {args.batch_size})")
    return run_reporting_user_errors(
        sam_bbox_to_segm, args.input_json, args.image_dir, args.sam_checkpoint, model_type=args.model_type,
        device=args.device, batch_size=args.batch_size, visualize=args.visualize,
        output_json=args.output_json, progress=not args.no_progress,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
