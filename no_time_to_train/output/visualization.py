"""Pictures of what the method sees: memory-bank colourings (vis_memory) and [GT | prediction]
panels of test images (``model_cfg.test.online_vis``).

Outputs go under ``results_analysis/`` in the working directory, as in the reference; set the
environment variable ``NTT_RESULTS_DIR`` (or pass ``results_dir``) to write elsewhere:

- ``<root>/memory_vis/<dataset_name>/{classIndex}_{imageId}_{annId}.png``:
  [crop | 5 px | k-means colouring | 5 px | PCA colouring], each panel the crop size (518 x 518).
- ``<root>/<dataset_name>/<file_name>``: [GT | 10 px | predictions above ``vis_thr``] at the original
  resolution (``file_name`` may contain sub-folders; they are created).

Images are RGB ``uint8`` arrays ``(H, W, 3)`` throughout. The drawing helpers (``draw_instances``,
``class_colors``, ``hconcat``, ``save_image``) do not depend on the model and are reused by the
dataset preview tools.
"""

from __future__ import annotations

import colorsys
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from no_time_to_train.data.images import load_rgb
from no_time_to_train.errors import ConfigError, DatasetError
from no_time_to_train.io_utils import atomic_open

RESULTS_DIR_ENV = "NTT_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results_analysis"
MEMORY_GAP = 5  # white pixels between the memory panels
PREDICTION_GAP = 10  # white pixels between the GT and prediction panels
FILL_ALPHA = 0.4

# 20 mutually distinct colours (RGB); indices beyond are generated (see ``class_colors``).
BASE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128), (170, 110, 40), (128, 0, 0),
    (250, 190, 212), (170, 255, 195), (128, 128, 0), (220, 190, 255), (0, 0, 128), (255, 215, 180),
    (128, 128, 128), (255, 250, 200),
)  # fmt: skip


def results_root(results_dir: str | None = None) -> str:
    """``results_dir`` if given, else ``$NTT_RESULTS_DIR``, else ``results_analysis`` (cwd-relative)."""
    return results_dir or os.environ.get(RESULTS_DIR_ENV) or DEFAULT_RESULTS_DIR


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
    out = np.zeros((len(masks), 4), np.float64)
    for i, m in enumerate(masks):
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        if len(ys):
            out[i] = (xs[0], ys[0], xs[-1], ys[-1])
    return out


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
    (_, base_h), _ = cv2.getTextSize("Hg", font, 1.0, 1)
    scale = max(0.35, 0.02 * w / base_h)
    thick = max(1, round(scale * 1.2))
    (tw, th), baseline = cv2.getTextSize(text, font, scale, thick)
    pad = max(1, round(th * 0.25))
    bw, bh = tw + 2 * pad, th + baseline + 2 * pad
    x0 = int(min(max(x, 0), max(w - bw, 0)))
    y0 = int(y - bh if y - bh >= 0 else min(y, max(h - bh, 0)))
    cv2.rectangle(image, (x0, y0), (x0 + bw - 1, y0 + bh - 1), tuple(int(c) for c in color), thickness=-1)
    cv2.putText(image, text, (x0 + pad, y0 + pad + th), font, scale, _text_color(color), thick, cv2.LINE_AA)


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
        scores: ``(N,)``; the label reads ``"name=NN"`` with NN = int(score * 100), or ``"name"``
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
            text = f"{text}={int(float(scores[i]) * 100)}"
        draw_label(out, text, x1, y1, color)
    return out


# ---------------------------------------------------------------------------------------------- memory
def patch_colouring(
    crop_rgb: np.ndarray,
    pixel_mask: np.ndarray,
    grid: int,
    patch_idx: np.ndarray,
    patch_rgb: np.ndarray,
    transparency: float = 1.0,
) -> np.ndarray:
    """Paint patches of a ``grid x grid`` layout over ``crop_rgb`` ``(S, S, 3)``.

    Patch ``p`` (row-major) covers the pixels whose ``(y * grid) // S, (x * grid) // S`` is
    ``divmod(p, grid)`` (14 x 14 blocks at 518 / 37). Patches ``patch_idx`` get ``patch_rgb``
    ``(n, 3)``, blended with weight ``transparency`` and only on pixels where ``pixel_mask > 0.5``;
    every other pixel keeps the crop.
    """
    h, w = crop_rgb.shape[:2]
    colour = np.zeros((grid * grid, 3), np.float32)
    painted = np.zeros(grid * grid, bool)
    colour[patch_idx] = patch_rgb
    painted[patch_idx] = True
    rows = (np.arange(h) * grid) // h
    cols = (np.arange(w) * grid) // w
    cell = rows[:, None] * grid + cols[None, :]
    alpha = (painted[cell] & (pixel_mask > 0.5)).astype(np.float32)[..., None] * transparency
    out = crop_rgb.astype(np.float32) * (1.0 - alpha) + colour[cell] * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def kmeans_patch_colors(feats: torch.Tensor, centers: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (cosine) of each patch feature, and its palette colour.

    Args: ``feats (n, D)``, ``centers (k, D)``. Returns ``assign (n,)`` and ``rgb (n, 3)`` uint8.
    """
    sim = F.normalize(feats.float(), dim=-1) @ F.normalize(centers.float(), dim=-1).T
    assign = sim.argmax(dim=1).cpu().numpy()
    palette = np.asarray(class_colors(centers.shape[0]), np.uint8).reshape(-1, 3)
    return assign, palette[assign]


def pca_patch_colors(feats: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> np.ndarray:
    """Project ``feats (n, D)`` minus ``mean (D,)`` on ``components (3, D)``; min-max normalise each
    component over the n patches to [0, 1] (0.5 where it is constant) -> RGB ``(n, 3)`` uint8."""
    proj = ((feats.float() - mean.float()) @ components.float().T).double().cpu().numpy()
    if len(proj) == 0:
        return np.zeros((0, 3), np.uint8)
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    span = hi - lo
    unit = np.where(span > 0, (proj - lo) / np.where(span > 0, span, 1.0), 0.5)
    return np.round(unit * 255.0).astype(np.uint8)


def visualize_memory_item(
    module: Any, item: dict, results_dir: str | None = None, transparency: float = 1.0
) -> str:
    """Save [crop | k-means colouring | PCA colouring] of one reference (``vis_memory``).

    ``module`` provides ``memory`` (a postprocessed ``MemoryBank``), ``segmenter``
    (``encode_references``) and ``model_cfg.dataset_name``; ``item`` is an item of the
    fill-memory crop dataset. Only foreground patches (mask weight > 0 at the patch's sampling
    pixel, i.e. exactly the patches stored in the bank) are coloured. Returns the file path.
    """
    memory = module.memory
    if memory.n_pca_components != 3:
        raise ConfigError(
            f"vis_memory paints the first 3 PCA components as RGB, but the memory has n_pca_components="
            f"{memory.n_pca_components}. Re-run postprocess_memory with "
            "--model.init_args.model_cfg.sam2_infer_cfgs.n_pca_components 3."
        )
    if not memory.is_postprocessed:
        raise ConfigError(
            "vis_memory needs a postprocessed memory (--ckpt_path of postprocess_memory's output)."
        )
    device = memory.mem_feats_centers.device
    image, mask = item["image"], item["mask"]
    feats, weights = module.segmenter.encode_references(image[None].to(device), mask[None].to(device))
    feats, weights = feats[0].float(), weights[0]
    grid = math.isqrt(feats.shape[0])
    if grid * grid != feats.shape[0]:
        raise ValueError(f"expected a square patch grid, got {feats.shape[0]} patches")
    c = int(item["class_idx"])
    fg = torch.nonzero(weights > 0).flatten()
    fg_feats = feats[fg]
    _, km_rgb = kmeans_patch_colors(fg_feats, memory.mem_feats_centers[c])
    pca_rgb = pca_patch_colors(fg_feats, memory.mem_pca_mean[c], memory.mem_pca_components[c])

    crop = to_uint8_rgb(image)
    pixel_mask = mask.detach().float().cpu().numpy()
    idx = fg.cpu().numpy()
    panel = hconcat(
        [
            crop,
            patch_colouring(crop, pixel_mask, grid, idx, km_rgb, transparency),
            patch_colouring(crop, pixel_mask, grid, idx, pca_rgb, transparency),
        ],
        MEMORY_GAP,
    )
    info = item["img_info"]
    name = f"{c}_{info['id']}_{info.get('ann_id', item.get('slot', 0))}.png"
    path = os.path.join(results_root(results_dir), "memory_vis", str(module.model_cfg.dataset_name), name)
    return save_image(path, panel)


# ---------------------------------------------------------------------------------------------- test
def class_display_names(module: Any) -> list[str]:
    """``model_cfg.class_names`` if set, else the test set's selected category names."""
    names = getattr(module.model_cfg, "class_names", None)
    return list(names) if names else list(module.dataset.cat_names)


def load_original_image(module: Any, item: dict) -> np.ndarray:
    """The target image at its original resolution, from ``model_cfg.test.imgs_path`` if set, else
    from the test set's root. Raises DatasetError if its size differs from ``item["ori_size"]``."""
    folder = module.model_cfg.test.imgs_path or module.dataset.root
    path = os.path.join(folder, item["file_name"])
    img = np.asarray(load_rgb(path))
    if "ori_size" in item and tuple(img.shape[:2]) != tuple(int(v) for v in item["ori_size"]):
        raise DatasetError(
            f"{path} is {img.shape[1]}x{img.shape[0]} but the test image is "
            f"{item['ori_size'][1]}x{item['ori_size'][0]}; model_cfg.test.imgs_path must hold the same "
            "images as the test set."
        )
    return img


def gt_instances(
    dataset: Any, img_id: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of the selected classes in one image: ``masks (N, H, W)`` bool, ``boxes (N, 4)``
    inclusive XYXY (from the COCO ``[x, y, w, h]`` box), ``labels (N,)`` class indices."""
    masks, boxes, labels = [], [], []
    with warnings.catch_warnings():  # pycocotools' decode warns under numpy 2 (harmless)
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        for c, anns in sorted(dataset.gt_by_image(img_id).items()):
            for ann in anns:
                m = dataset.coco.annToMask(ann).astype(bool)
                if m.shape != tuple(size):
                    m = (
                        cv2.resize(m.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
                        > 0
                    )
                x, y, w, h = ann["bbox"]
                masks.append(m)
                boxes.append((x, y, x + max(w - 1, 0), y + max(h - 1, 0)))
                labels.append(c)
    if not masks:
        return np.zeros((0, *size), bool), np.zeros((0, 4)), np.zeros(0, np.int64)
    return np.stack(masks), np.asarray(boxes, np.float64), np.asarray(labels, np.int64)


def _safe_relpath(file_name: str) -> str:
    """``file_name`` as a relative path that stays inside the output folder."""
    parts = [p for p in file_name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return os.path.join(*parts) if parts else "image.png"


def visualize_prediction(module: Any, item: dict, dets: Any, results_dir: str | None = None) -> str:
    """Save [GT | predictions with score > ``vis_thr``] for one test image (``online_vis``).

    ``module`` provides ``model_cfg`` (``dataset_name``, ``class_names``, ``test.imgs_path``,
    ``test.vis_thr``) and ``dataset`` (the test set: ``root``, ``coco``, ``gt_by_image``,
    ``cat_names``); ``item`` is a test-set item; ``dets`` a ``Detections`` at the original
    resolution. GT masks are decoded here only. Returns the file path.
    """
    image = load_original_image(module, item)
    size = image.shape[:2]
    names = class_display_names(module)
    gt_masks, gt_boxes, gt_labels = gt_instances(module.dataset, item["img_id"], size)
    gt_panel = draw_instances(image, gt_masks, gt_boxes, gt_labels, None, names)

    keep = dets.scores > module.model_cfg.test.vis_thr
    masks = dets.masks[keep].detach().cpu().numpy().astype(bool).reshape(-1, *size)
    pred_panel = draw_instances(
        image,
        masks,
        dets.boxes[keep].detach().cpu().double().numpy(),
        dets.labels[keep].detach().cpu().numpy(),
        dets.scores[keep].detach().cpu().double().numpy(),
        names,
    )
    panel = hconcat([gt_panel, pred_panel], PREDICTION_GAP)
    out = os.path.join(
        results_root(results_dir), str(module.model_cfg.dataset_name), _safe_relpath(item["file_name"])
    )
    return save_image(out, panel)
