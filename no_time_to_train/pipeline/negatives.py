"""Negative references: the false positives of a support set, per class.

``test_support`` segments a support set (images with ground truth) with the positive memory;
``sample_negatives`` keeps, per predicted class, the highest-scoring predictions that are false
positives -- box IoU below 0.1 with every ground-truth box of that class in the image (or the
class absent from the image) -- at most ``length_negative`` of them, each scoring at least
``negative_score_thr``. They are written like a reference set (the reference-set pickle or JSON
that ``fill_memory_neg`` reads, ``{category_id: [{"img_id", "ann_ids"}]}``) plus a COCO json of
their masks (the support images and one annotation per negative).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

FP_IOU = 0.1  # a prediction overlapping a same-class ground-truth box less than this is a false positive


def box_iou_xywh(a: Sequence[float], bs: np.ndarray) -> np.ndarray:
    """IoU of one COCO ``[x, y, w, h]`` box with ``(M, 4)`` boxes."""
    if len(bs) == 0:
        return np.zeros(0)
    ax2, ay2 = a[0] + a[2], a[1] + a[3]
    bx2, by2 = bs[:, 0] + bs[:, 2], bs[:, 1] + bs[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(a[0], bs[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(a[1], bs[:, 1]), 0, None)
    inter = iw * ih
    union = a[2] * a[3] + bs[:, 2] * bs[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def false_positives(coco_gt: Any, results: list[dict], cat_ids: Sequence[int]) -> list[int]:
    """Indices of ``results`` (COCO result dicts) that are false positives of their class."""
    gt_boxes: dict[tuple[int, int], list] = defaultdict(list)
    for ann in coco_gt.dataset.get("annotations", []):
        if not ann.get("iscrowd", 0):
            gt_boxes[(ann["image_id"], ann["category_id"])].append(ann["bbox"])
    wanted = set(cat_ids)
    out = []
    for i, r in enumerate(results):
        if r["category_id"] not in wanted:
            continue
        boxes = np.asarray(gt_boxes.get((r["image_id"], r["category_id"]), []), np.float64).reshape(-1, 4)
        if len(boxes) == 0 or box_iou_xywh(r["bbox"], boxes).max() < FP_IOU:
            out.append(i)
    return out


def sample_negatives(coco_gt: Any, results: list[dict], cat_ids: Sequence[int], length: int,
                     score_thr: float) -> tuple[dict[int, list[dict]], dict]:  # fmt: skip
    """The negative reference set and its COCO json (see the module docstring).

    Per class, false positives are ranked by descending score, ties by (image id, position in
    ``results``), so the choice does not depend on how results were gathered. Returns
    ``(refs, coco)``: ``refs[category_id]`` lists ``{"img_id", "ann_ids": [id]}`` (possibly empty);
    ``coco`` has the support images holding a negative, the support's categories and one
    annotation per negative (RLE mask, box and score of the prediction; ids from 1).
    """
    by_class: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for i in false_positives(coco_gt, results, cat_ids):
        r = results[i]
        if r["score"] >= score_thr:
            by_class[r["category_id"]].append((-float(r["score"]), int(r["image_id"]), i))
    refs: dict[int, list[dict]] = {int(c): [] for c in cat_ids}
    anns, image_ids = [], set()
    for c in cat_ids:
        for _, img_id, i in sorted(by_class.get(c, []))[:length]:
            r = results[i]
            ann_id = len(anns) + 1
            seg = dict(r["segmentation"])
            if isinstance(seg.get("counts"), bytes):
                seg["counts"] = seg["counts"].decode()
            area = float(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode()}))
            anns.append({"id": ann_id, "image_id": img_id, "category_id": int(c), "bbox": [float(v) for v in r["bbox"]],
                         "segmentation": seg, "area": area, "iscrowd": 0, "score": float(r["score"])})  # fmt: skip
            refs[int(c)].append({"img_id": img_id, "ann_ids": [ann_id]})
            image_ids.add(img_id)
    images = [coco_gt.imgs[i] for i in sorted(image_ids)]
    categories = coco_gt.dataset.get("categories", [])
    coco = {"info": {"description": "negative references: false positives of the support set"},
            "images": images, "annotations": anns, "categories": categories}  # fmt: skip
    return refs, coco
