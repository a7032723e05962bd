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
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from no_time_to_train.checkpoints.sam_box import build_box_segmenter, resolve_model_type
from no_time_to_train.data.coco import image_file_name, read_coco_json
from no_time_to_train.data.images import load_rgb
from no_time_to_train.data.polygons import box_polygon, mask_to_polygons
from no_time_to_train.errors import (
    ConfigError,
    DatasetError,
    UserInputError,
    run_reporting_user_errors,
)
from no_time_to_train.io_utils import atomic_save_json
from no_time_to_train.models.box_prompt import BoxPromptSegmenter
from no_time_to_train.output.drawing import draw_instances, save_image

__all__ = [
    "SegmentationReport",
    "add_segmentations",
    "check_images",
    "main",
    "output_paths",
    "sam_bbox_to_segm",
]

Log = Callable[[str], None]


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
# Masks -> COCO annotations
# ---------------------------------------------------------------------------------------------


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
    return image_dir / image_file_name(info)


def _read_rgb(path: Path) -> np.ndarray:
    return np.array(
        load_rgb(str(path), "Check --image_dir.")
    )  # a writable copy (torchvision warns on read-only arrays)


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


def draw_overlay(
    image_rgb: np.ndarray, masks: np.ndarray, anns: list[dict], categories: list[dict]
) -> np.ndarray:
    """The masks of one image drawn in their class colours, with their class names (class index =
    rank of the category id, as everywhere in this project)."""
    cat_ids = sorted(c.get("id") for c in categories)
    names = [next(c.get("name", str(i)) for c in categories if c.get("id") == i) for i in cat_ids] + ["?"]
    index = {c: k for k, c in enumerate(cat_ids)}
    labels = [index.get(a.get("category_id"), len(cat_ids)) for a in anns]
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2] - 1, a["bbox"][1] + a["bbox"][3] - 1]
             for a in anns]  # fmt: skip
    return draw_instances(image_rgb, masks, boxes, labels, names=names)


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
                    save_image(
                        str(path),
                        draw_overlay(pixels[k], all_masks, anns_by_img[img_id], data.get("categories", [])),
                    )
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
    data = read_coco_json(input_json, "Check --input_json.")
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
