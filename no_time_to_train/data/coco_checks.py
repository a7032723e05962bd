"""Validation of COCO-format annotation files, once, when they are loaded.

Each problem is either **refused** (a ``DatasetError`` naming the file and the offending ids, before
any model is built) or **handled and reported** (fixed in memory, the file is never changed, and one
note per kind of problem is printed):

| problem | decision |
|---|---|
| two images with one id | refused: their ground truth would be scored against each other |
| two annotations with one id | refused: references are picked by annotation id |
| an annotation whose ``image_id`` is not in ``images[]`` | refused |
| an annotation whose ``category_id`` is not in ``categories[]`` | handled: ignored (datasets that keep every COCO annotation but declare only their classes) |
| a box partly outside its image | handled: clipped to the image |
| a box missing, not finite, of non-positive size, or wholly outside its image | handled when the annotation has a mask (the mask's box is used); refused otherwise |
| a polygon part with fewer than 3 points | handled: that part is dropped (as detectron2 does); refused when no part is left |
| an RLE whose ``size`` is not the image's, or whose counts do not cover it | refused |
| in target ground truth, masks on some annotations but not on others | refused (segm AP would be wrong); no masks at all is box-only ground truth: bbox AP only |
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

from no_time_to_train.errors import DatasetError

MAX_LISTED = 8


def _ids(values: Iterable[Any]) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:MAX_LISTED])
    return f"[{head}{', ...' if len(values) > MAX_LISTED else ''}] ({len(values)} in all)"


def _valid_polygon_parts(segm: list) -> list[list[float]]:
    return [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]


def _rle_problem(segm: dict, h: int, w: int) -> str | None:
    size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(size, list) and len(size) == 2) or counts is None:
        return "an RLE needs 'size' [height, width] and 'counts'"
    if [int(size[0]), int(size[1])] != [h, w]:
        return f"RLE size {size} is not the image's [{h}, {w}]"
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != h * w:
            return f"uncompressed RLE counts do not add up to height x width = {h * w}"
    elif not isinstance(counts, (str, bytes)):
        return "RLE counts must be a list of ints or a compressed string"
    return None


def has_mask(ann: dict) -> bool:
    """Whether an annotation carries a mask: an RLE, or a polygon with at least 3 points."""
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        return "counts" in segm and "size" in segm
    return isinstance(segm, list) and bool(_valid_polygon_parts(segm))


def _mask_box(ann: dict, h: int, w: int) -> list[float] | None:
    import pycocotools.mask as mask_utils

    segm = ann["segmentation"]
    rle = mask_utils.frPyObjects(segm, h, w) if isinstance(segm, list) else segm
    if isinstance(rle, dict) and isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, h, w)
    rle = mask_utils.merge(rle) if isinstance(rle, list) else rle
    x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
    return [x, y, bw, bh] if bw > 0 and bh > 0 else None


def validate_coco(data: Any, path: str, flag: str, role: str = "any") -> list[str]:
    """Check (and, where the table above says so, repair in place) a loaded COCO dict.

    Args:
        data: the parsed json. path / flag: named in every message. role: ``"test"`` for target
            ground truth (mask consistency is checked), anything else for reference sources.
    Returns:
        One note per kind of handled problem (empty when the file is clean).
    """
    where = f"{path} ({flag})"
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{where} is not a COCO annotation file: it needs an 'images' list.")
    anns = data.setdefault("annotations", [])
    cats = data.setdefault("categories", [])
    if not isinstance(anns, list) or not isinstance(cats, list):
        raise DatasetError(f"{where}: 'annotations' and 'categories' must be lists.")

    image_ids = Counter(img.get("id") for img in data["images"])
    dup = sorted((i for i, n in image_ids.items() if n > 1), key=str)
    if dup:
        raise DatasetError(
            f"{where}: image id(s) {_ids(dup)} appear more than once in images[]; each image needs its own "
            "id (otherwise their ground truth is scored against each other's predictions). Renumber them."
        )
    ann_ids = Counter(a.get("id") for a in anns)
    dup = sorted((i for i, n in ann_ids.items() if n > 1), key=str)
    if dup:
        raise DatasetError(
            f"{where}: annotation id(s) {_ids(dup)} appear more than once; give each its own id."
        )
    images = {img["id"]: img for img in data["images"]}
    orphans = [a.get("id") for a in anns if a.get("image_id") not in images]
    if orphans:
        missing = sorted({a.get("image_id") for a in anns if a.get("image_id") not in images}, key=str)
        raise DatasetError(
            f"{where}: annotation(s) {_ids(orphans)} name image id(s) {_ids(missing)} that images[] does not "
            "declare. Add those images or remove the annotations."
        )
    cat_ids = {c.get("id") for c in cats}
    stray = [a["id"] for a in anns if a.get("category_id") not in cat_ids]
    notes = []
    if stray:
        notes.append(
            f"{len(stray)} annotation(s) name categories that categories[] does not declare; ignored"
        )

    clipped, from_mask, dropped_parts, bad_box, bad_segm = [], [], [], [], []
    for a in anns:
        info = images[a["image_id"]]
        h, w = int(info.get("height") or 0), int(info.get("width") or 0)
        segm = a.get("segmentation")
        if isinstance(segm, list) and segm:
            good = _valid_polygon_parts(segm)
            if len(good) != len(segm):
                if not good:
                    bad_segm.append((a["id"], "its polygons all have fewer than 3 points"))
                    continue
                a["segmentation"] = good
                dropped_parts.append(a["id"])
        elif isinstance(segm, dict) and h and w:
            problem = _rle_problem(segm, h, w)
            if problem:
                bad_segm.append((a["id"], problem))
                continue
        box = a.get("bbox")
        ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
        ok = ok and all(math.isfinite(v) for v in box)
        if ok and h and w:
            x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
            x2, y2 = min(float(w), float(box[0] + box[2])), min(float(h), float(box[1] + box[3]))
            ok = box[2] > 0 and box[3] > 0 and x2 > x1 and y2 > y1
            if ok and [x1, y1, x2 - x1, y2 - y1] != [float(v) for v in box]:
                a["bbox"] = [x1, y1, x2 - x1, y2 - y1]
                clipped.append(a["id"])
        elif ok:
            ok = box[2] > 0 and box[3] > 0
        if not ok:
            fixed = _mask_box(a, h, w) if h and w and has_mask(a) else None
            if fixed is None:
                bad_box.append(a["id"])
            else:
                a["bbox"] = fixed
                from_mask.append(a["id"])
    if bad_segm:
        ids = [i for i, _ in bad_segm]
        raise DatasetError(
            f"{where}: annotation(s) {_ids(ids)} have an unusable segmentation ({bad_segm[0][1]}, for "
            f"annotation {bad_segm[0][0]}). Fix or remove them."
        )
    if bad_box:
        raise DatasetError(
            f"{where}: annotation(s) {_ids(bad_box)} have a box that is missing, of non-positive size or "
            "outside the image, and no mask to take a box from. Fix their 'bbox' ([x, y, width, height] in "
            "pixels) or remove them."
        )
    if clipped:
        notes.append(f"box(es) of annotation(s) {_ids(clipped)} reach outside the image; clipped to it")
    if from_mask:
        notes.append(f"annotation(s) {_ids(from_mask)} have an unusable box; the box of their mask is used")
    if dropped_parts:
        notes.append(
            f"polygon parts with fewer than 3 points dropped from annotation(s) {_ids(dropped_parts)}"
        )
    if role == "test":
        declared = [a for a in anns if a.get("category_id") in cat_ids]
        masked = [has_mask(a) for a in declared]
        if any(masked) and not all(masked):
            without = [a["id"] for a, m in zip(declared, masked, strict=True) if not m]
            raise DatasetError(
                f"{where}: annotation(s) {_ids(without)} have no mask while the others have one, so mask "
                "(segm) AP would count them as missed. Give them masks (python "
                "no_time_to_train/dataset/sam_bbox_to_segm_batch.py turns boxes into masks) or remove every "
                "mask for box-only evaluation."
            )
    return notes


def print_notes(notes: list[str], path: str) -> None:
    """Print the handled problems once (rank 0 of a multi-process run only)."""
    if notes and os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        for note in notes:
            print(f"Note: {path}: {note}.")
