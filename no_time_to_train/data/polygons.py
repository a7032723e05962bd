"""Masks as COCO polygons."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


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
