"""Plain per-image exports of the test predictions (``model_cfg.test.export_dir``).

For a test image ``file_name`` (say ``sub/000123.jpg``) the files go to
``<export_dir>/sub/000123/``:

- ``export_format="png"``: ``inst_000.png``, ``inst_001.png``, ... (8-bit, 255 inside the
  instance, 0 elsewhere, at the original resolution) and ``instances.json``, a list with one entry
  per instance: ``{"file", "category_id", "category_name", "score", "bbox_xyxy"}``.
- ``export_format="rle"``: ``000123.json``, the same list with ``"segmentation"`` (COCO RLE,
  ``counts`` as str, ``size`` = [H, W]) instead of ``"file"``.

``category_id`` is the real id of the annotation file (not the class index); ``bbox_xyxy`` is the
inclusive pixel box ``[x1, y1, x2, y2]``. Instances are in descending score order. An image without
detections still gets its (empty) index file. Every file is written atomically, the index last, and
``inst_*.png`` files left over from an earlier run of the same image are removed.
"""

from __future__ import annotations

import os
import re
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from no_time_to_train.errors import ConfigError
from no_time_to_train.io_utils import atomic_open, atomic_save_json

EXPORT_FORMATS = ("png", "rle")
PNG_INDEX = "instances.json"
_INSTANCE_PNG = re.compile(r"^inst_\d{3,}\.png$")


def export_folder(export_dir: str, file_name: str) -> str:
    """``<export_dir>/<file_name without extension>`` (sub-folders of ``file_name`` kept, so equal
    stems in different folders do not collide; ``..`` components are dropped)."""
    parts = [p for p in file_name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    parts = parts or ["image"]
    parts[-1] = os.path.splitext(parts[-1])[0] or parts[-1]
    return os.path.join(export_dir, *parts)


def instance_records(module: Any, dets: Any) -> tuple[list[dict], np.ndarray]:
    """Common fields of every instance, and the masks ``(N, H, W)`` bool (numpy)."""
    ds = module.dataset
    masks = dets.masks.detach().cpu().numpy().astype(bool)
    boxes = dets.boxes.detach().cpu().double().numpy().reshape(-1, 4)
    records = []
    for i, (score, label) in enumerate(zip(dets.scores.tolist(), dets.labels.tolist(), strict=True)):
        c = int(label)
        records.append({
            "category_id": int(ds.cat_inds_to_ids[c]),
            "category_name": str(ds.cat_names[c]),
            "score": float(score),
            "bbox_xyxy": [float(v) for v in boxes[i]],
        })  # fmt: skip
    return records, masks


def export_prediction(
    module: Any, item: dict, dets: Any, export_dir: str | None = None, export_format: str | None = None
) -> list[str]:
    """Write the detections of one test image (see the module docstring); returns the written paths
    (masks first, index last).

    ``module`` provides ``model_cfg.test.export_dir`` / ``export_format`` (overridden by the
    arguments) and ``dataset`` (``cat_inds_to_ids``, ``cat_names``); ``item`` a test-set item
    (``file_name``); ``dets`` a ``Detections``.
    """
    opts = module.model_cfg.test
    export_dir = export_dir or opts.export_dir
    fmt = export_format or opts.export_format
    if not export_dir:
        raise ConfigError("export_prediction needs model_cfg.test.export_dir.")
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"model_cfg.test.export_format={fmt!r}: choose one of {EXPORT_FORMATS}.")
    folder = export_folder(export_dir, item["file_name"])
    os.makedirs(folder, exist_ok=True)
    records, masks = instance_records(module, dets)
    written: list[str] = []
    if fmt == "png":
        for i, (rec, m) in enumerate(zip(records, masks, strict=True)):
            name = f"inst_{i:03d}.png"
            path = os.path.join(folder, name)
            ok, buf = cv2.imencode(".png", m.astype(np.uint8) * 255)
            if not ok:
                raise RuntimeError(f"could not encode {path}")
            with atomic_open(path, "wb") as f:
                f.write(buf.tobytes())
            written.append(path)
            records[i] = {"file": name, **rec}
        current = {os.path.basename(p) for p in written}
        for old in os.listdir(folder):
            if _INSTANCE_PNG.match(old) and old not in current:
                os.remove(os.path.join(folder, old))
        index = os.path.join(folder, PNG_INDEX)
    else:
        if len(masks):
            rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
            for rec, rle in zip(records, rles, strict=True):
                rec["segmentation"] = {
                    "size": [int(v) for v in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                }
        index = os.path.join(folder, os.path.basename(folder) + ".json")
    atomic_save_json(records, index)
    written.append(index)
    return written
