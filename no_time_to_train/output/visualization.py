"""Pictures of what the method sees: memory-bank colourings (vis_memory) and [GT | prediction]
panels of test images (``model_cfg.test.online_vis``).

Outputs go under ``results_analysis/`` in the working directory, as in the reference; set the
environment variable ``NTT_RESULTS_DIR`` (or pass ``results_dir``) to write elsewhere:

- ``<root>/memory_vis/<dataset_name>/{classIndex}_{imageId}_{annId}.png``:
  [crop | 5 px | k-means colouring | 5 px | PCA colouring], each panel the crop size (518 x 518).
- ``<root>/<dataset_name>/<file_name>``: [GT | 10 px | predictions above ``vis_thr``] at the original
  resolution (``file_name`` may contain sub-folders; they are created), with a caption band above
  ("ground truth", "predictions > 0.40" or "no detections > 0.40") and a legend of the classes
  shown below.

Images are RGB ``uint8`` arrays ``(H, W, 3)`` throughout; the drawing itself is ``output.drawing``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from no_time_to_train.data.images import load_rgb
from no_time_to_train.errors import ConfigError, DatasetError
from no_time_to_train.io_utils import safe_relative_parts
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.output.drawing import (
    captioned,
    class_color,
    class_colors,
    draw_instances,
    hconcat,
    save_image,
    to_uint8_rgb,
)  # fmt: skip
from no_time_to_train.pipeline.segmenter import Detections

RESULTS_DIR_ENV = "NTT_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "results_analysis"
MEMORY_GAP = 5  # white pixels between the memory panels
PREDICTION_GAP = 10  # white pixels between the GT and prediction panels


def results_root(results_dir: str | None = None) -> str:
    """``results_dir`` if given, else ``$NTT_RESULTS_DIR``, else ``results_analysis`` (cwd-relative)."""
    return results_dir or os.environ.get(RESULTS_DIR_ENV) or DEFAULT_RESULTS_DIR


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
    item: dict, feats: torch.Tensor, weights: torch.Tensor, memory: MemoryBank, dataset_name: str,
    results_dir: str | None = None, transparency: float = 1.0,
) -> str:  # fmt: skip
    """Save [crop | k-means colouring | PCA colouring] of one reference (``vis_memory``).

    Args:
        item: an item of the fill-memory crop dataset (``image``, ``mask``, ``class_idx``, ``img_info``).
        feats, weights: ``(P, D)`` patch features and ``(P,)`` mask weights of its crop
            (``ReferenceSegmenter.encode_references``).
        memory: the postprocessed bank (k-means centres and PCA of each class).
    Only foreground patches (mask weight > 0 at the patch's sampling pixel, i.e. exactly the
    patches stored in the bank) are coloured. Returns the file path.
    """
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
    feats = feats.float().to(memory.mem_feats_centers.device)
    grid = math.isqrt(feats.shape[0])
    if grid * grid != feats.shape[0]:
        raise ValueError(f"expected a square patch grid, got {feats.shape[0]} patches")
    c = int(item["class_idx"])
    fg = torch.nonzero(weights > 0).flatten().to(feats.device)
    fg_feats = feats[fg]
    _, km_rgb = kmeans_patch_colors(fg_feats, memory.mem_feats_centers[c])
    pca_rgb = pca_patch_colors(fg_feats, memory.mem_pca_mean[c], memory.mem_pca_components[c])

    image, mask = item["image"], item["mask"]
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
    path = os.path.join(results_root(results_dir), "memory_vis", str(dataset_name), name)
    return save_image(path, panel)


# ---------------------------------------------------------------------------------------------- test
def load_original_image(folder: str, file_name: str, ori_size: tuple[int, int] | None = None) -> np.ndarray:
    """A target image at its original resolution (``folder``: ``model_cfg.test.imgs_path`` or the
    test set's root). Raises DatasetError if its size differs from ``ori_size`` (H, W)."""
    path = os.path.join(folder, file_name)
    img = np.asarray(load_rgb(path))
    if ori_size is not None and tuple(img.shape[:2]) != tuple(int(v) for v in ori_size):
        raise DatasetError(
            f"{path} is {img.shape[1]}x{img.shape[0]} but the test image is "
            f"{ori_size[1]}x{ori_size[0]}; model_cfg.test.imgs_path must hold the same "
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


def prediction_path(dataset_name: str, file_name: str, results_dir: str | None = None) -> str:
    """``<results root>/<dataset_name>/<file_name>``, kept inside the results folder."""
    parts = safe_relative_parts(file_name) or ["image.png"]
    return os.path.join(results_root(results_dir), str(dataset_name), *parts)


def visualize_prediction(
    image: np.ndarray, dets: Detections, class_names: list[str],
    gt: tuple[np.ndarray, np.ndarray, np.ndarray], vis_thr: float, out_path: str,
) -> str:  # fmt: skip
    """Save [GT | predictions with score > ``vis_thr``] of one test image (``online_vis``).

    Args:
        image: ``(H, W, 3)`` RGB at the original resolution. dets: its detections.
        gt: ``(masks, boxes, labels)`` of its ground truth (:func:`gt_instances`).
    The picture is ``(caption h + H + legend h, 2 W + 10, 3)``: captions above the panels, the
    panels at rows ``caption h : caption h + H``, a legend of the classes drawn below.
    Returns the written path (``out_path``, or with ``.png`` appended for an unknown extension).
    """
    size = image.shape[:2]
    gt_masks, gt_boxes, gt_labels = gt
    gt_panel = draw_instances(image, gt_masks, gt_boxes, gt_labels, None, class_names)
    keep = dets.scores > vis_thr
    masks = dets.masks[keep].detach().cpu().numpy().astype(bool).reshape(-1, *size)
    pred_panel = draw_instances(
        image,
        masks,
        dets.boxes[keep].detach().cpu().double().numpy(),
        dets.labels[keep].detach().cpu().numpy(),
        dets.scores[keep].detach().cpu().double().numpy(),
        class_names,
    )
    thr = f"{vis_thr:.2f}"
    caption = f"predictions > {thr}" if len(masks) else f"no detections > {thr}"
    shown = sorted({int(c) for c in gt_labels} | {int(c) for c in dets.labels[keep].tolist()})
    legend = [(class_names[c] if c < len(class_names) else str(c), class_color(c)) for c in shown]
    picture = captioned([gt_panel, pred_panel], PREDICTION_GAP, ["ground truth", caption], legend)
    return save_image(out_path, picture)
