"""COCO result records, gathering across ranks, and COCOeval (bbox then segm)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def encode_detections(
    masks: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
    image_id: int | str, cat_inds_to_ids: dict[int, int],
) -> list[dict[str, Any]]:  # fmt: skip
    """COCO result dicts for one image.

    ``boxes`` are inclusive pixel XYXY; the COCO box is ``[x1, y1, x2 - x1, y2 - y1]``, exactly as
    the reference writes it (so its bbox numbers are reproduced). ``segmentation`` is an RLE with
    ``counts`` as str; ``category_id`` is the real COCO id of the class index.
    """
    if len(scores) == 0:
        return []
    # One mask at a time: a (H, W, N) copy of 100 masks of a 24-megapixel photo would take 2.4 GB.
    rles = [mask_utils.encode(np.asfortranarray(m.detach().cpu().numpy().astype(np.uint8))) for m in masks]
    b = boxes.detach().cpu().double().numpy()
    out = []
    for i, (rle, s, c) in enumerate(zip(rles, scores.tolist(), labels.tolist(), strict=True)):
        rle["counts"] = rle["counts"].decode("ascii")
        x1, y1, x2, y2 = b[i].tolist()
        out.append({
            "image_id": image_id,
            "category_id": int(cat_inds_to_ids[int(c)]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(s),
            "segmentation": rle,
        })  # fmt: skip
    return out


def gather_indexed(local: list[tuple[int, Any]]) -> list[Any]:
    """Gather ``(dataset_index, payload)`` pairs from every rank; payloads in dataset order.

    Duplicates (the distributed sampler pads the last batch by repeating indices) are dropped.
    Works for any world size, on gloo (CPU) and nccl; without torch.distributed it just sorts.
    """
    items = list(local)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[list[tuple[int, Any]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, items)
        items = [x for part in parts for x in (part or [])]
    seen: dict[int, Any] = {}
    for idx, payload in items:
        seen.setdefault(int(idx), payload)
    return [seen[i] for i in sorted(seen)]


def evaluate_coco(
    coco_gt: COCO, results: list[dict], cat_ids: list[int] | None = None, img_ids: list[int] | None = None,
    iou_types: tuple[str, ...] = ("bbox", "segm"), verbose: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, COCOeval]]:  # fmt: skip
    """Run COCOeval for each IoU type and print the standard 12-line summaries.

    ``cat_ids`` restricts evaluation to the selected classes (categories without GT and without
    detections do not count either way, as in plain COCOeval). With no detections at all every
    metric is 0 (pycocotools cannot load an empty result list).

    Returns ``(stats, evals)``: the 12 summary numbers per IoU type (keys ``STAT_NAMES``) and the
    ``COCOeval`` objects (for per-class tables).
    """
    img_ids = sorted(coco_gt.getImgIds()) if img_ids is None else img_ids
    stats: dict[str, dict[str, float]] = {}
    evals: dict[str, COCOeval] = {}
    for iou_type in iou_types:
        title = f"{iou_type.upper()} RESULTS:"
        if not results:
            if verbose:
                print(f"{title}\n  no detections: every metric is 0")
            stats[iou_type] = dict.fromkeys(STAT_NAMES, 0.0)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            # One result set for both types, as the reference: loadRes takes the box branch, so
            # the area used for the small/medium/large ranges is the box area in both.
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.imgIds = img_ids
            if cat_ids is not None:
                ev.params.catIds = list(cat_ids)
            ev.evaluate()
            ev.accumulate()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ev.summarize()
        if verbose:
            print(title)
            print(buf.getvalue().rstrip())
        stats[iou_type] = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats, strict=True)}
        evals[iou_type] = ev
    return stats, evals
