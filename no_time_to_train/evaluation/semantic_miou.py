"""COCO-20i semantic-segmentation mIoU from instance predictions.

Usage (from the repository root)::

    python no_time_to_train/dataset/coco_inst_to_segm.py \\
        --results inst_to_segm/coco_inst_semantic_split_1_1shot_42seed_results.json \\
        --gt data/coco/annotations/instances_val2017.json --split 1

Per image, the ground truth and the prediction become label maps over the evaluated classes:
label 0 is background and the split's classes are 1..C, in the split's order (for
``coco_semantic_split_N``: the fold's 20 COCO classes; ``--class-names`` gives any other list).
Pixels of classes outside that list are background.

* Ground truth: every annotation of an evaluated class (crowd regions included) is painted in
  json order.
* Prediction: the results json (COCO result format, RLE or polygon ``segmentation``); detections
  scoring below ``--score-thr`` (0.5) or of other classes are dropped, the rest are painted in
  ascending score order, so where masks overlap the highest score wins.

Intersections and unions are summed over all images of the ground truth (a confusion matrix), so
IoU_c = I_c / U_c over the whole set; the mIoU is the mean over the C classes (classes with an
empty union are left out and listed). Background IoU and FB-IoU (foreground vs background) are
reported separately and never enter the mIoU.

The reference script indexed classes by their position among all 80 categories while averaging
over indices 0..C-1, with background also at 0; this one indexes within the split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from no_time_to_train.data.coco import read_coco_json
from no_time_to_train.data.splits import METAINFO
from no_time_to_train.errors import DatasetError, UserInputError
from no_time_to_train.io_utils import atomic_save_json

DEFAULT_SCORE_THR = 0.5


def _decode(segm: object, height: int, width: int, where: str) -> np.ndarray:
    """A COCO segmentation (polygons, RLE with str/bytes counts, uncompressed RLE) -> bool (H, W)."""
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and "counts" in segm:
        size = list(segm.get("size", [height, width]))
        if size != [height, width]:
            raise DatasetError(f"{where}: mask size {size} differs from the image size {[height, width]}.")
        rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
    else:
        raise DatasetError(f"{where}: no mask ('segmentation'); the mIoU needs mask predictions.")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def class_list(gt: dict, split: int | None, class_names: Sequence[str] | None) -> list[tuple[int, str]]:
    """``[(category_id, name)]`` of the evaluated classes, in label order 1..C."""
    if (split is None) == (not class_names):
        raise UserInputError("Give exactly one of --split (COCO-20i fold 1-4) and --class-names.")
    if split is not None:
        key = f"coco_semantic_split_{split}"
        if key not in METAINFO:
            raise UserInputError(f"--split must be 1, 2, 3 or 4 (got {split}).")
        class_names = METAINFO[key]
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise DatasetError(f"Class(es) {missing} are not categories of the ground-truth json.")
    if len(set(class_names)) != len(class_names):
        raise UserInputError(f"Repeated class names in {list(class_names)}.")
    return [(by_name[n], n) for n in class_names]


def confusion_matrix(
    gt: dict, results: list[dict], classes: list[tuple[int, str]], score_thr: float = DEFAULT_SCORE_THR
) -> np.ndarray:
    """``(C+1, C+1)`` pixel counts, rows = ground-truth label, columns = predicted label (0 = bg)."""
    label_of = {cat_id: k + 1 for k, (cat_id, _) in enumerate(classes)}
    n = len(classes) + 1
    images = {img["id"]: img for img in gt["images"]}
    gt_by_img: dict[object, list[dict]] = {}
    for ann in gt["annotations"]:
        if ann.get("category_id") in label_of:
            gt_by_img.setdefault(ann["image_id"], []).append(ann)
    dets_by_img: dict[object, list[tuple[float, int, dict]]] = {}
    unknown = set()
    for k, det in enumerate(results):
        if det.get("category_id") not in label_of or float(det.get("score", 0.0)) < score_thr:
            continue
        if det.get("image_id") not in images:
            unknown.add(det.get("image_id"))
            continue
        dets_by_img.setdefault(det["image_id"], []).append((float(det["score"]), k, det))
    if unknown:
        shown = sorted(unknown, key=str)[:5]
        raise DatasetError(
            f"Results refer to {len(unknown)} image id(s) not in the ground truth, e.g. {shown}."
        )

    total = np.zeros((n, n), np.int64)
    for img_id, img in images.items():
        h, w = int(img["height"]), int(img["width"])
        target = np.zeros((h, w), np.int64)
        for ann in gt_by_img.get(img_id, []):
            mask = _decode(ann.get("segmentation"), h, w, f"GT annotation {ann.get('id')}")
            target[mask] = label_of[ann["category_id"]]
        pred = np.zeros((h, w), np.int64)
        for _score, k, det in sorted(dets_by_img.get(img_id, []), key=lambda t: (t[0], t[1])):
            mask = _decode(det.get("segmentation"), h, w, f"result {k} (image {img_id})")
            pred[mask] = label_of[det["category_id"]]
        total += np.bincount((target * n + pred).ravel(), minlength=n * n).reshape(n, n)
    return total


def iou_summary(conf: np.ndarray, classes: list[tuple[int, str]]) -> dict:
    """Per-class IoU, mIoU over the classes, background IoU and FB-IoU from a confusion matrix."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    per_class = {
        name: (None if np.isnan(iou[k + 1]) else float(iou[k + 1])) for k, (_, name) in enumerate(classes)
    }
    valid = [v for v in per_class.values() if v is not None]
    fg_inter = conf[1:, 1:].sum()
    fg_union = conf.sum() - conf[0, 0]
    bg_union = conf[0, :].sum() + conf[:, 0].sum() - conf[0, 0]
    fg_iou = fg_inter / fg_union if fg_union else float("nan")
    bg_iou = conf[0, 0] / bg_union if bg_union else float("nan")
    return {
        "mIoU": float(np.mean(valid)) if valid else float("nan"),
        "per_class_IoU": per_class,
        "classes_without_pixels": [name for name, v in per_class.items() if v is None],
        "background_IoU": float(bg_iou),
        "FB_IoU": float(np.nanmean([fg_iou, bg_iou])),
        "num_classes": len(classes),
        "num_classes_in_mean": len(valid),
    }


def evaluate_semantic(
    results_json: str | os.PathLike,
    gt_json: str | os.PathLike,
    split: int | None = None,
    class_names: Sequence[str] | None = None,
    score_thr: float = DEFAULT_SCORE_THR,
) -> dict:
    """Load both files and compute :func:`iou_summary` (see the module docstring)."""
    gt = read_coco_json(gt_json, "Pass the COCO instances json of the evaluated images with --gt.")
    path = Path(results_json)
    if not path.is_file():
        raise DatasetError(
            f"Results file not found: {path}. It is written by the test step (--export_result)."
        )
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise DatasetError(f"{path}: expected a list of COCO result dicts.")
    classes = class_list(gt, split, class_names)
    summary = iou_summary(confusion_matrix(gt, results, classes, score_thr), classes)
    summary.update({"score_thr": score_thr, "results": str(results_json), "gt": str(gt_json)})
    if split is not None:
        summary["split"] = f"coco_semantic_split_{split}"
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{'class':<20} IoU"]
    for name, v in summary["per_class_IoU"].items():
        lines.append(f"{name:<20} {'n/a' if v is None else f'{100 * v:.2f}'}")
    lines.append(
        f"mIoU over {summary['num_classes_in_mean']} of {summary['num_classes']} classes: "
        f"{100 * summary['mIoU']:.2f}"
    )
    lines.append(
        f"background IoU: {100 * summary['background_IoU']:.2f}  FB-IoU: {100 * summary['FB_IoU']:.2f}"
    )
    if summary["classes_without_pixels"]:
        lines.append(
            f"not in the mean (no pixels in GT or prediction): {', '.join(summary['classes_without_pixels'])}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Semantic mIoU (COCO-20i) from instance predictions: background separate, classes "
        "indexed within the split, detections painted in ascending score order."
    )
    parser.add_argument("--results", required=True, help="COCO-format results json of the test step")
    parser.add_argument(
        "--gt",
        default="./data/coco/annotations/instances_val2017.json",
        help="ground-truth instances json (default: %(default)s)",
    )
    parser.add_argument("--split", type=int, default=None, help="COCO-20i fold 1-4 (coco_semantic_split_N)")
    parser.add_argument("--class-names", default=None, help="comma-separated class names instead of --split")
    parser.add_argument("--score-thr", type=float, default=DEFAULT_SCORE_THR, help="default %(default)s")
    parser.add_argument("--out", default=None, help="also write the numbers to this json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [s.strip() for s in args.class_names.split(",") if s.strip()] if args.class_names else None
    try:
        summary = evaluate_semantic(args.results, args.gt, args.split, names, args.score_thr)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.out:
        atomic_save_json(summary, args.out, indent=2)
        print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
