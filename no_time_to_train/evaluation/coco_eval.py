"""COCOeval (bbox then segm) with the standard summaries."""

from __future__ import annotations

import contextlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


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
