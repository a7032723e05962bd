"""Plain per-image outputs of predictions: one schema for the CLI's ``model_cfg.test.export_dir``
and the one-image command (``segment_image``).

Every per-image file is a json object::

    {"image": "<file name>", "height": H, "width": W, "instances": [
        {"category_id": 16, "category_name": "bird", "score": 0.9, "bbox_xyxy": [x1, y1, x2, y2],
         "segmentation": {"size": [H, W], "counts": "..."},   # with RLE output
         "file": "inst_000.png"},                              # with PNG output
        ...]}

``category_id`` is the real id of the annotation file (null where there is none, e.g. references
given as folders); ``bbox_xyxy`` the inclusive pixel box; instances in descending score order. PNG
masks are 8-bit, 255 inside the instance. Every file is written atomically, the index last, and
instance PNGs left over from an earlier run of the same image are removed.

CLI layout, for a test image ``sub/000123.jpg``: ``<export_dir>/sub/000123/`` holding
``inst_000.png, ...`` and ``instances.json`` (``export_format="png"``) or ``000123.json`` ("rle").
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import cv2
import numpy as np

from no_time_to_train.errors import ConfigError
from no_time_to_train.evaluation.coco_results import encode_rle
from no_time_to_train.io_utils import atomic_open, atomic_save_json, safe_relative_parts

EXPORT_FORMATS = ("png", "rle")
PNG_INDEX = "instances.json"


def export_folder(export_dir: str, file_name: str) -> str:
    """``<export_dir>/<file_name without extension>`` (sub-folders of ``file_name`` kept, so equal
    stems in different folders do not collide; ``..`` components are dropped)."""
    parts = safe_relative_parts(file_name) or ["image"]
    parts[-1] = os.path.splitext(parts[-1])[0] or parts[-1]
    return os.path.join(export_dir, *parts)


def instance_records(
    boxes: np.ndarray, scores: Sequence[float], labels: Sequence[int], class_names: Sequence[str],
    cat_ids: Sequence[int] | None = None,
) -> list[dict]:  # fmt: skip
    """The fields every instance has, whatever the output format."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return [
        {
            "category_id": int(cat_ids[int(c)]) if cat_ids is not None else None,
            "category_name": str(class_names[int(c)]),
            "score": float(s),
            "bbox_xyxy": [float(v) for v in boxes[i]],
        }
        for i, (s, c) in enumerate(zip(scores, labels, strict=True))
    ]


def write_instances(
    folder: str, index_name: str, image_name: str, masks: np.ndarray, records: list[dict],
    rle: bool = True, png_prefix: str | None = None,
) -> list[str]:  # fmt: skip
    """Write one image's instances: PNG masks ``<png_prefix>NNN.png`` (when ``png_prefix`` is
    given) and the index ``index_name``; ``masks (N, H, W)`` bool. Returns the written paths,
    index last."""
    masks = np.asarray(masks, bool)
    os.makedirs(folder, exist_ok=True)
    h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
    written, out = [], []
    for i, (rec, m) in enumerate(zip(records, masks, strict=True)):
        rec = dict(rec)
        if rle:
            rec["segmentation"] = encode_rle(m)
        if png_prefix is not None:
            name = f"{png_prefix}{i:03d}.png"
            ok, buf = cv2.imencode(".png", m.astype(np.uint8) * 255)
            if not ok:
                raise RuntimeError(f"could not encode {name}")
            with atomic_open(os.path.join(folder, name), "wb") as f:
                f.write(buf.tobytes())
            written.append(os.path.join(folder, name))
            rec["file"] = name
        out.append(rec)
    if png_prefix is not None:
        stale = re.compile(rf"^{re.escape(png_prefix)}\d{{3,}}\.png$")
        current = {os.path.basename(p) for p in written}
        for old in os.listdir(folder):
            if stale.match(old) and old not in current:
                os.remove(os.path.join(folder, old))
    index = os.path.join(folder, index_name)
    atomic_save_json({"image": image_name, "height": int(h), "width": int(w), "instances": out}, index)
    return [*written, index]


def export_prediction(
    masks: np.ndarray, boxes: np.ndarray, scores: Sequence[float], labels: Sequence[int], file_name: str,
    class_names: Sequence[str], cat_ids: Sequence[int], export_dir: str, export_format: str = "png",
) -> list[str]:  # fmt: skip
    """The CLI's per-image export (``model_cfg.test.export_dir`` / ``export_format``) of one test
    image's detections; returns the written paths (masks first, index last)."""
    if not export_dir:
        raise ConfigError("export_prediction needs model_cfg.test.export_dir.")
    if export_format not in EXPORT_FORMATS:
        raise ConfigError(f"model_cfg.test.export_format={export_format!r}: choose one of {EXPORT_FORMATS}.")
    folder = export_folder(export_dir, file_name)
    records = instance_records(boxes, scores, labels, class_names, cat_ids)
    png = export_format == "png"
    index = PNG_INDEX if png else os.path.basename(folder) + ".json"
    return write_instances(
        folder, index, file_name, masks, records, rle=not png, png_prefix="inst_" if png else None
    )
