"""Drawing shared by every picture the project writes: one palette, one instance painter.

Images are RGB ``uint8`` arrays ``(H, W, 3)``. Class ``i`` has the colour ``class_color(i)``
everywhere: the quick start's [ground truth | prediction] panels, ``vis_memory``, ``segment_image``
overlays, the box-to-mask previews and the sampling previews.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from no_time_to_train.io_utils import atomic_open
from no_time_to_train.models.matching import masks_to_boxes

FILL_ALPHA = 0.4

# 20 mutually distinct colours (RGB); indices beyond are generated (see ``class_colors``).
BASE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128), (170, 110, 40), (128, 0, 0),
    (250, 190, 212), (170, 255, 195), (128, 128, 0), (220, 190, 255), (0, 0, 128), (255, 215, 180),
    (128, 128, 128), (255, 250, 200),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- colours
def class_color(index: int) -> tuple[int, int, int]:
    """A fixed RGB colour per class index, for any number of classes (LVIS has 1203).

    The first 20 come from ``BASE_PALETTE``; later ones step the hue by the golden ratio (so
    neighbouring indices differ strongly) and cycle through three saturation/value levels.
    """
    if index < len(BASE_PALETTE):
        return BASE_PALETTE[index]
    k = index - len(BASE_PALETTE)
    hue = (0.11 + k * 0.618033988749895) % 1.0
    sat, val = ((0.85, 0.95), (0.65, 0.8), (0.95, 0.65))[k % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """``class_color(i)`` for ``i < n``."""
    return [class_color(i) for i in range(n)]


# ---------------------------------------------------------------------------------------------- basics
def to_uint8_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float tensor in [0, 1] -> ``(H, W, 3)`` uint8 (rounded)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return (
        np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    )


def hconcat(panels: Sequence[np.ndarray], gap: int, value: int = 255) -> np.ndarray:
    """Panels of equal height side by side, separated by ``gap`` columns of ``value``."""
    h = panels[0].shape[0]
    sep = np.full((h, gap, 3), value, np.uint8)
    parts: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if p.shape[0] != h:
            raise ValueError(f"panel {i} has height {p.shape[0]}, expected {h}")
        parts += [sep, p] if i else [p]
    return np.concatenate(parts, axis=1)


def save_image(path: str, image_rgb: np.ndarray, jpeg_quality: int = 95) -> str:
    """Write an RGB image atomically, in the format of the extension (PNG if OpenCV cannot write
    that extension; ``.png`` is then appended). Parent folders are created. Returns the path."""
    ext = os.path.splitext(path)[1].lower()
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(ext, bgr, params) if ext else (False, None)
    except cv2.error:
        ok, buf = False, None
    if not ok:
        path, (ok, buf) = path + ".png", cv2.imencode(".png", bgr)
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())
    return path


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool -> ``(N, 4)`` inclusive pixel XYXY (zeros for an empty mask)."""
    return masks_to_boxes(torch.from_numpy(np.ascontiguousarray(masks, dtype=bool))).double().numpy()


# ---------------------------------------------------------------------------------------------- drawing
def line_thickness(width: int) -> int:
    """Contour / box thickness for an image ``width`` pixels wide: max(2, 0.003 * W)."""
    return max(2, int(0.003 * width))


def _text_color(color: Sequence[int]) -> tuple[int, int, int]:
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def draw_label(image: np.ndarray, text: str, x: int, y: int, color: Sequence[int]) -> None:
    """Draw ``text`` on a filled ``color`` rectangle whose bottom-left corner is ``(x, y)`` (moved
    inside the image when it would leave it). Hershey font, height about 2 % of the image width."""
    h, w = image.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale, thick = _text_size(w)
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thick)
    pad = max(1, round(th * 0.25))
    bw, bh = tw + 2 * pad, th + baseline + 2 * pad
    x0 = int(min(max(x, 0), max(w - bw, 0)))
    y0 = int(y - bh if y - bh >= 0 else min(y, max(h - bh, 0)))
    cv2.rectangle(image, (x0, y0), (x0 + bw - 1, y0 + bh - 1), tuple(int(c) for c in color), thickness=-1)
    cv2.putText(image, text, (x0 + pad, y0 + pad + th), font, scale, _text_color(color), thick, cv2.LINE_AA)


def score_label(name: str, score: float) -> str:
    """``"bird 0.53"``: the class name and the score (two decimals, rounded down so that a
    label never shows a score above the true one, e.g. 0.999 -> 0.99)."""
    return f"{name} {math.floor(score * 100 + 1e-6) / 100:.2f}"


def _text_size(width: int) -> tuple[float, int]:
    """Font scale and stroke of labels on an image ``width`` pixels wide (about 2 % of it high)."""
    (_, base_h), _ = cv2.getTextSize("Hg", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
    scale = max(0.35, 0.02 * width / base_h)
    return scale, max(1, round(scale * 1.2))


def band_line_height(ref_width: int) -> int:
    """Height of one row of a ``text_band`` whose text size follows ``ref_width``."""
    scale, thick = _text_size(ref_width)
    (_, th), baseline = cv2.getTextSize("Hg", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    return th + baseline + 2 * max(2, round(th * 0.4))


def text_band(width: int, items: Sequence[tuple[int, str, Sequence[int] | None]], ref_width: int,
              rows: int = 1) -> np.ndarray:  # fmt: skip
    """A white band ``(rows * line height, width, 3)`` with texts: ``items`` are ``(x, text, swatch)``
    (``swatch``: an RGB colour square drawn before the text, or None), laid out left to right from
    ``x`` and wrapped to a new row when a row is full. Text size follows ``ref_width`` (a panel's
    width) like the instance labels."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale, thick = _text_size(ref_width)
    (_, th), baseline = cv2.getTextSize("Hg", font, scale, thick)
    pad = max(2, round(th * 0.4))
    line = band_line_height(ref_width)
    placed: list[tuple[int, int, str, Sequence[int] | None]] = []
    row, cursor = 0, None
    for x, text, swatch in items:
        (tw, _), _ = cv2.getTextSize(text, font, scale, thick)
        need = tw + (th + pad if swatch is not None else 0)
        start = x if cursor is None or x > cursor else cursor
        if start + need > width and start > x:
            row, start = row + 1, x
        placed.append((row, start, text, swatch))
        cursor = start + need + 3 * pad
    band = np.full(((max(rows, row + 1)) * line, width, 3), 255, np.uint8)
    for r, x0, text, swatch in placed:
        top = r * line
        if swatch is not None:
            cv2.rectangle(
                band, (x0, top + pad), (x0 + th - 1, top + pad + th - 1), tuple(int(c) for c in swatch), -1
            )
            x0 += th + pad
        cv2.putText(band, text, (x0, top + pad + th), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return band


def captioned(panels: Sequence[np.ndarray], gap: int, captions: Sequence[str],
              legend: Sequence[tuple[str, Sequence[int]]] = ()) -> np.ndarray:  # fmt: skip
    """Panels side by side (``hconcat``) with a caption band above each panel and, when ``legend``
    (``(name, colour)`` pairs) is given, a legend band below the row.

    Returns ``(caption h + H + legend h, sum of widths + gaps, 3)`` uint8; the panels themselves
    are unchanged, at rows ``caption h : caption h + H``.
    """
    row = hconcat(panels, gap)
    ref = panels[0].shape[1]
    xs = np.cumsum([0] + [p.shape[1] + gap for p in panels[:-1]])
    pad = max(2, ref // 200)
    head = text_band(row.shape[1], [(int(x) + pad, c, None) for x, c in zip(xs, captions, strict=True)], ref)
    parts = [head, row]
    if legend:
        parts.append(text_band(row.shape[1], [(pad, name, color) for name, color in legend], ref))
    return np.concatenate(parts, axis=0)


def draw_instances(
    image_rgb: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    names: Sequence[str] | None = None,
    colors: Sequence[Sequence[int]] | None = None,
    alpha: float = FILL_ALPHA,
    draw_boxes: bool = True,
) -> np.ndarray:
    """Instances drawn on a copy of ``image_rgb`` ``(H, W, 3)`` uint8.

    Args:
        masks: ``(N, H, W)`` bool. Each is filled (``alpha`` blend) and outlined (external
            contours, thickness ``line_thickness(W)``) in its class colour.
        boxes: ``(N, 4)`` inclusive pixel XYXY; computed from the masks when None.
        labels: ``(N,)`` class indices (all 0 when None); pick the colour and the name.
        scores: ``(N,)``; the label reads ``"name 0.53"`` (the score, two decimals), or ``"name"``
            without scores. Lower scores are drawn first, so higher ones end up on top.
        names: display name per class index (the index itself where missing).
        colors: RGB colour per class index (``class_color`` where missing).
    """
    out = image_rgb.copy()
    masks = np.asarray(masks, bool).reshape(-1, *out.shape[:2])
    n = len(masks)
    if n == 0:
        return out
    boxes = boxes_from_masks(masks) if boxes is None else np.asarray(boxes, np.float64).reshape(n, 4)
    labels = np.zeros(n, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(n)
    order = np.argsort(np.asarray(scores, np.float64), kind="stable") if scores is not None else np.arange(n)

    def color_of(c: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in colors[c]) if colors is not None and c < len(colors) else class_color(c)

    def name_of(c: int) -> str:
        return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)

    work = out.astype(np.float32)
    for i in order:
        m = masks[i]
        work[m] = work[m] * (1.0 - alpha) + np.asarray(color_of(int(labels[i])), np.float32) * alpha
    out = np.clip(np.round(work), 0, 255).astype(np.uint8)
    t = line_thickness(out.shape[1])
    for i in order:
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color_of(int(labels[i])), t)
    for i in order:
        color = color_of(int(labels[i]))
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        if draw_boxes:
            cv2.rectangle(out, (x1, y1), (x2, y2), color, t)
        text = name_of(int(labels[i]))
        if scores is not None:
            text = score_label(text, float(scores[i]))
        draw_label(out, text, x1, y1, color)
    return out
