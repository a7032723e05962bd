"""Deterministic synthetic dataset in COCO format, for tests, the quick-start demo and benchmarks.

Every drawn class has its own saturated colour and shape family, painted on a textured but nearly
grey background, so a colour-based oracle can tell the classes apart from each other and from the
background. Unannotated "distractor" shapes use colours no class uses, and some images hold no
class at all. Objects do not touch each other, so every annotation is the exact set of pixels
painted in its class colour.

Layout (``layout="coco"``, what the reference README expects under ``data/coco``)::

    <out>/train2017/000000000001.jpg ...        <out>/annotations/instances_train2017.json
    <out>/val2017/000000000007.jpg ...          <out>/annotations/instances_val2017.json
    <out>/annotations/references_{K}shot.pkl    (reference set built from the train split)

``layout="custom"`` puts all images in ``<out>/images/`` and names the jsons
``annotations/custom_references.json`` (train) and ``annotations/custom_targets.json`` (val).

Conventions: ``bbox`` is ``[x, y, w, h]`` (floats, pixels, tight around the mask: ``w`` counts the
pixels of the widest row, so ``x + w`` is one past the last column); ``segmentation`` is a COCO
polygon list (default) or an uncompressed-to-string RLE ``{"size": [h, w], "counts": str}``; ``area``
is the mask's pixel count. The painted object pixels equal ``COCO.annToMask`` exactly in both formats
(polygons are rasterised with pycocotools before painting). Image and annotation ids are unique
across the two splits. The same arguments give byte-identical jsons and pickle (and PNG images).
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from no_time_to_train.data.reference_sets import save_reference_pkl
from no_time_to_train.data.splits import COCO_CATEGORIES
from no_time_to_train.errors import DatasetError
from no_time_to_train.evaluation.coco_results import encode_rle
from no_time_to_train.io_utils import atomic_save_json

DEFAULT_CLASSES: tuple[str, ...] = ("person", "bicycle", "car", "boat", "bird", "dog")
LARGE_SIZE = (960, 1024)  # ``--large``: benchmark images close to SAM2's 1024 input
MARKER = "no_time_to_train synthetic dataset"  # in ``info.description``; guards real datasets
_SUPERCATEGORIES = (
    (1, "person"), (2, "vehicle"), (10, "outdoor"), (16, "animal"), (27, "accessory"), (34, "sports"),
    (44, "kitchen"), (52, "food"), (62, "furniture"), (72, "electronic"), (78, "appliance"), (84, "indoor"),
)  # fmt: skip


def _ring(n: int, radii: tuple[float, ...] = (1.0,), start: float = 0.0) -> list[tuple[float, float]]:
    """``n`` vertices on a circle, radii cycling through ``radii`` (a star for two radii)."""
    angles = [start + 2 * math.pi * k / n for k in range(n)]
    return [
        (radii[k % len(radii)] * math.cos(t), radii[k % len(radii)] * math.sin(t))
        for k, t in enumerate(angles)
    ]


_UNIT_SHAPES: dict[str, list[tuple[float, float]]] = {  # vertices in [-1, 1]^2, image axes (y down)
    "ellipse": _ring(48),
    "rectangle": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "star": _ring(10, (1.0, 0.45), -math.pi / 2),
    "hexagon": _ring(6),
    "cross": [(-.35, -1), (.35, -1), (.35, -.35), (1, -.35), (1, .35), (.35, .35), (.35, 1), (-.35, 1),
              (-.35, .35), (-1, .35), (-1, -.35), (-.35, -.35)],
    "arrow": [(-1, -.3), (.2, -.3), (.2, -.8), (1, 0), (.2, .8), (.2, .3), (-1, .3)],
    "lshape": [(-1, -1), (-.3, -1), (-.3, .3), (1, .3), (1, 1), (-1, 1)],
}  # fmt: skip
SHAPE_FAMILIES: tuple[str, ...] = tuple(_UNIT_SHAPES)
_HARD_FRACTION = 0.15  # objects that are small or near a border, as in real COCO
_INFO = {"description": "", "version": "1.0", "year": 2017, "contributor": "no_time_to_train"}
_LICENSES = [{"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0 1.0"}]


def coco_categories() -> list[dict]:
    """All 80 COCO categories as in ``instances_*.json``: ``{"supercategory", "id", "name"}``."""
    return [
        {"supercategory": [s for first, s in _SUPERCATEGORIES if first <= cid][-1], "id": cid, "name": n}
        for cid, n in COCO_CATEGORIES
    ]


def is_valid_reference(bbox: list[float], width: int, height: int) -> bool:
    """The few-shot sampling filter: box sides >= 32 px and >= 10 px from every border (XYWH)."""
    x, y, w, h = bbox
    return w >= 32 and h >= 32 and x >= 10 and y >= 10 and width - (x + w) >= 10 and height - (y + h) >= 10


def _palette(n: int, value: int) -> list[tuple[int, int, int]]:
    """``n`` saturated BGR colours with evenly spaced hues (offset by half a step when value < 255)."""
    offset = 0.0 if value == 255 else 0.5
    hsv = np.array([[[round((i + offset) * 180 / n) % 180, 255, value] for i in range(n)]], np.uint8)
    return [tuple(int(v) for v in c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-saturation texture: grey level + smooth blotches + fine grain, slightly tinted. (H, W, 3) uint8."""
    grid = rng.normal(0.0, 18.0, (h // 32 + 2, w // 32 + 2)).astype(np.float32)
    smooth = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    grey = rng.uniform(80, 180) + smooth + rng.normal(0.0, 7.0, (h, w)).astype(np.float32)
    img = grey[..., None] + rng.uniform(-6, 6, 3).astype(np.float32) + rng.normal(0.0, 2.0, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_points(rng: np.random.Generator, family: str, size: float) -> np.ndarray:
    """Vertices (N, 2) of a randomly rotated and stretched shape about the origin, ``size`` px across."""
    aspect = math.sqrt(rng.uniform(0.7, 1.4))
    pts = np.asarray(_UNIT_SHAPES[family], np.float64) * (size / 2) * np.array([aspect, 1 / aspect])
    t = rng.uniform(0, 2 * math.pi)
    return pts @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])


def _rasterise(pts: np.ndarray, h: int, w: int) -> tuple[np.ndarray, list[list[float]]]:
    """Fill a polygon, then trace its outer contours (through pixel centres) as COCO polygons and
    rasterise those with pycocotools, so the returned (H, W) uint8 mask is exactly what ``annToMask``
    gives for the returned polygons."""
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours if len(c) >= 3]
    if not polys:
        return np.zeros_like(mask), []
    with warnings.catch_warnings():  # pycocotools' decode warns under numpy 2 (harmless copy=False)
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))), polys


def _place(rng, family, occupied, boxes, size, margin, require_valid=False):
    """Try to put one shape; returns ``(mask, polygons)``, or None if it does not fit cleanly.

    Rejected: the shape leaves the image minus ``margin``, its box has IoU > 0.1 with a box in
    ``boxes``, or it touches ``occupied``; with ``require_valid``, also a box failing
    ``is_valid_reference``. On success the box joins ``boxes`` and the dilated mask ``occupied``.
    """
    h, w = occupied.shape
    pts = _shape_points(rng, family, size)
    lo, hi = pts.min(0), pts.max(0)
    free = np.array([w - 1, h - 1]) - 2 * margin - (hi - lo)
    if (free < 0).any():
        return None
    pts = pts - lo + margin + rng.uniform(0, 1, 2) * free
    box = np.concatenate([pts.min(0), pts.max(0) + 1])
    for other in boxes:
        inter = np.prod(np.clip(np.minimum(box[2:], other[2:]) - np.maximum(box[:2], other[:2]), 0, None))
        if inter / (np.prod(box[2:] - box[:2]) + np.prod(other[2:] - other[:2]) - inter) > 0.1:
            return None
    mask, polys = _rasterise(pts, h, w)
    if not mask.any() or (mask & occupied).any():
        return None
    if require_valid and not is_valid_reference(_bbox(mask), w, h):
        return None
    boxes.append(box)
    occupied |= cv2.dilate(mask, np.ones((7, 7), np.uint8))  # keep a 3-px gap between objects
    return mask, polys


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, bgr: tuple[int, int, int]) -> None:
    ys, xs = np.nonzero(mask)
    noise = rng.normal(0.0, 4.0, (len(ys), 1))
    img[ys, xs] = np.clip(np.asarray(bgr, np.float64) + noise, 0, 255).astype(np.uint8)


CONFUSER_SHIFT = 34  # confusers: the class colour with its strongest channel this much darker
CONFUSER_JITTER = 40  # with confusers, each object's colour also varies by up to this per channel


def confuser_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """A class's confuser colour: close to the class colour (SAM-like proposals and a colour
    encoder mistake one for the other) yet distinct."""
    c = list(bgr)
    k = int(np.argmax(c))
    c[k] = max(0, c[k] - CONFUSER_SHIFT)
    return tuple(c)


def _draw_confusers(rng, img, occupied, boxes, spec, n: int) -> None:
    """``n`` unannotated shapes that share a class's colour (nearly) but not its shape family."""
    side = min(img.shape[:2])
    cats = sorted(spec["color"])
    for _ in range(n):
        cat = cats[int(rng.integers(len(cats)))]
        others = [f for f in SHAPE_FAMILIES if f != spec["family"][cat]]
        for _attempt in range(30):
            family = others[int(rng.integers(len(others)))]
            placed = _place(
                rng, family, occupied, boxes, rng.uniform(0.12, 0.3) * side, int(rng.integers(0, 20))
            )
            if placed is not None:
                _paint(rng, img, placed[0], confuser_color(spec["color"][cat]))
                break


def _draw_image(rng, width, height, spec, class_slots, n_distractors, n_confusers=0):
    """Draw one BGR image. ``class_slots``: [(cat_id, must_be_valid)]. Returns (img, [(cat_id, mask, polys)]).

    A slot that cannot be placed cleanly is dropped, so an image may hold fewer objects than slots.
    """
    h, w = height, width
    img = _background(rng, h, w)
    occupied, boxes, objects = np.zeros((h, w), np.uint8), [], []
    side = min(h, w)
    for cat_id, required in class_slots:
        hard = not required and rng.uniform() < _HARD_FRACTION
        for attempt in range(200 if required else 60):
            size = max(rng.uniform(0.18, 0.38) * side * 0.985**attempt, 44)
            if hard and rng.uniform() < 0.5:
                size, margin = rng.uniform(24, 34), int(rng.integers(12, 20))
            else:
                margin = int(rng.integers(0, 10)) if hard else int(rng.integers(12, 30))
            placed = _place(rng, spec["family"][cat_id], occupied, boxes, size, margin, required)
            if placed is None:
                continue
            color = spec["color"][cat_id]
            if spec.get("jitter"):  # instances of a class vary in shade (the confuser datasets)
                j = spec["jitter"]
                color = tuple(int(np.clip(v + rng.integers(-j, j + 1), 0, 255)) for v in color)
            _paint(rng, img, placed[0], color)
            objects.append((cat_id, *placed))
            break
    for _ in range(n_distractors):
        for _attempt in range(30):
            family = SHAPE_FAMILIES[int(rng.integers(len(SHAPE_FAMILIES)))]
            size = rng.uniform(0.12, 0.3) * side
            placed = _place(rng, family, occupied, boxes, size, int(rng.integers(0, 20)))
            if placed is not None:
                distractors = spec["distractor_colors"]
                _paint(rng, img, placed[0], distractors[int(rng.integers(len(distractors)))])
                break
    if n_confusers:  # after everything else: without confusers the images are unchanged
        _draw_confusers(rng, img, occupied, boxes, spec, n_confusers)
    return img, objects


def _bbox(mask: np.ndarray) -> list[float]:
    """Tight XYWH box of a non-empty mask, as COCO's ``toBbox`` computes it."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _segmentation(mask: np.ndarray, polys: list[list[float]], segm_format: str) -> object:
    if segm_format == "polygon":
        return polys
    return encode_rle(mask)


def _class_slots(rng, cat_ids, deficit, images_left, max_instances):
    """Classes to draw in one non-empty image: [(cat_id, must_be_valid_reference)].

    Classes still short of valid train references come first (most short first), and the image gets
    enough objects to cover the remaining shortfall over ``images_left`` images.
    """
    n_obj = max(int(rng.integers(1, max_instances + 1)), math.ceil(sum(deficit.values()) / images_left))
    n_obj = min(n_obj, max_instances)
    tie = dict(zip(cat_ids, rng.permutation(len(cat_ids)).tolist(), strict=True))
    short = sorted((c for c in cat_ids if deficit[c] > 0), key=lambda c: (-deficit[c], tie[c]))[:n_obj]
    extra = rng.integers(len(cat_ids), size=n_obj - len(short))
    return [(c, True) for c in short] + [(cat_ids[int(k)], False) for k in extra]


def _dataset_paths(out: Path, layout: str, train_dirname: str, val_dirname: str) -> tuple[dict, dict]:
    """({split: image folder}, {split: annotation json}) for ``layout`` "coco" or "custom"."""
    ann = out / "annotations"
    if layout == "custom":
        names = {"train": "custom_references.json", "val": "custom_targets.json"}
        return {s: out / "images" for s in names}, {s: ann / n for s, n in names.items()}
    if layout != "coco" or train_dirname == val_dirname:
        raise ValueError(f"need layout 'coco' or 'custom' and two split folders, got {layout!r}")
    dirs = {"train": out / train_dirname, "val": out / val_dirname}
    return dirs, {s: ann / f"instances_{d.name}.json" for s, d in dirs.items()}


def generate_coco_dataset(
    out_dir: str | os.PathLike,
    *,
    n_train: int = 6,
    n_val: int = 6,
    class_names: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    n_shot: int = 2,
    seed: int = 0,
    min_size: int = 320,
    max_size: int = 512,
    max_instances: int = 4,
    empty_fraction: float = 0.2,
    image_format: Literal["jpg", "png"] = "jpg",
    segm_format: Literal["polygon", "rle"] = "polygon",
    layout: Literal["coco", "custom"] = "coco",
    train_dirname: str = "train2017",
    val_dirname: str = "val2017",
    overwrite: bool = False,
    confusers: int = 0,
) -> dict:
    """Write the dataset under ``out_dir`` (see the module docstring) and return where things are.

    Image sides are drawn uniformly from ``[min_size, max_size]``; non-empty images hold 1 to
    ``max_instances`` annotated objects (plus 0-2 distractors); about ``empty_fraction`` of each split
    (at least one image when the split has two or more, unless train needs them all) holds
    distractors only. The train split is arranged so every class has ``n_shot`` valid instances
    (``is_valid_reference``) in distinct images; ``reference_pkl`` picks them with the seed.

    Returns a dict with ``out_dir``, ``train_json``, ``val_json``, ``train_img_dir``, ``val_img_dir``,
    ``reference_pkl`` (str paths), ``category_ids`` and ``class_names`` (drawn classes, ascending id),
    ``class_colors`` ({category_id: (r, g, b)}), ``shape_families`` ({category_id: family}),
    ``distractor_colors`` ([(r, g, b)]) and ``num_images`` / ``num_annotations`` ({"train", "val"}).
    ``confusers``: up to this many unannotated shapes per image with a class's colour darkened by
    ``CONFUSER_SHIFT`` on its strongest channel and another shape family (their colours are
    ``confuser_colors``, {category_id: (r, g, b)}); the annotated objects then also vary in shade
    (up to ``CONFUSER_JITTER`` per channel), so that true objects and confusers overlap in score.
    0 leaves every image as without the option.
    Raises ValueError for bad arguments and DatasetError before overwriting a non-synthetic json.
    """
    name_to_id = {n: i for i, n in COCO_CATEGORIES}
    unknown = [n for n in class_names if n not in name_to_id]
    if unknown or not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be distinct COCO class names; unknown: {unknown}")
    if not (1 <= min_size <= max_size and n_shot >= 1 and max_instances >= 1 and 0 <= empty_fraction < 1):
        raise ValueError(
            "need 1 <= min_size <= max_size, n_shot >= 1, max_instances >= 1, empty_fraction < 1"
        )
    if image_format not in ("jpg", "png") or segm_format not in ("polygon", "rle"):
        raise ValueError(
            f"image_format must be jpg/png and segm_format polygon/rle, not {image_format}/{segm_format}"
        )
    cat_ids = sorted(name_to_id[n] for n in class_names)
    n_cls, per_image = len(cat_ids), min(max_instances, len(cat_ids))
    min_nonempty = math.ceil(n_cls * n_shot / per_image)  # train images needed for the reference set
    if n_train < min_nonempty:
        raise ValueError(
            f"n_train={n_train} is too small for {n_cls} classes x {n_shot} shots with at most "
            f"{per_image} objects per image; use n_train >= {min_nonempty}."
        )
    out = Path(out_dir)
    img_dirs, jsons = _dataset_paths(out, layout, train_dirname, val_dirname)
    for path in jsons.values():
        if path.is_file() and not overwrite and MARKER not in path.open(errors="replace").read(2048):
            raise DatasetError(
                f"{path} exists and is not a synthetic dataset; refusing to overwrite it "
                "(pass overwrite=True / --overwrite to replace it)."
            )

    bgr = dict(zip(cat_ids, _palette(n_cls, 255), strict=True))
    families = {c: SHAPE_FAMILIES[i % len(SHAPE_FAMILIES)] for i, c in enumerate(cat_ids)}
    spec = {"color": bgr, "family": families, "distractor_colors": _palette(n_cls, 150),
            "jitter": CONFUSER_JITTER if confusers else 0}  # fmt: skip
    ext = ".jpg" if image_format == "jpg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    img_id, ann_id, counts = 1, 1, {}
    valid_refs: dict[int, list[tuple[int, int]]] = {c: [] for c in cat_ids}  # (img_id, ann_id)
    for split_idx, (split, n_img) in enumerate([("train", n_train), ("val", n_val)]):
        img_dirs[split].mkdir(parents=True, exist_ok=True)
        n_empty = max(1, round(empty_fraction * n_img)) if empty_fraction > 0 and n_img >= 2 else 0
        if split == "train":
            n_empty = min(n_empty, n_img - min_nonempty)
        empty = set(np.random.default_rng([seed, split_idx]).permutation(n_img)[:n_empty].tolist())
        deficit = {c: n_shot if split == "train" else 0 for c in cat_ids}  # valid references missing
        images, anns, nonempty_left = [], [], n_img - n_empty
        for i in range(n_img):
            rng = np.random.default_rng([seed, split_idx, i])
            width, height = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
            slots = []
            if i not in empty:
                slots = _class_slots(rng, cat_ids, deficit, nonempty_left, max_instances)
                nonempty_left -= 1
            n_distractors = int(rng.integers(1, 4)) if i in empty else int(rng.integers(0, 3))
            n_conf = int(rng.integers(0, confusers + 1)) if confusers else 0
            img, objects = _draw_image(rng, width, height, spec, slots, n_distractors, n_conf)
            name = f"{img_id:012d}{ext}"
            (img_dirs[split] / name).write_bytes(cv2.imencode(ext, img, params)[1].tobytes())
            images.append({"license": 1, "file_name": name, "height": height, "width": width, "id": img_id})
            for cat_id, mask, polys in objects:
                bbox = _bbox(mask)
                segm = _segmentation(mask, polys, segm_format)
                ann = {"segmentation": segm, "area": float(mask.sum()), "iscrowd": 0, "image_id": img_id}
                anns.append({**ann, "bbox": bbox, "category_id": cat_id, "id": ann_id})
                fresh = all(r[0] != img_id for r in valid_refs[cat_id])
                if split == "train" and fresh and is_valid_reference(bbox, width, height):
                    valid_refs[cat_id].append((img_id, ann_id))
                    deficit[cat_id] = max(deficit[cat_id] - 1, 0)
                ann_id += 1
            img_id += 1
        info = {**_INFO, "description": f"{MARKER} (seed={seed}, split={split})"}
        coco = {"info": info, "licenses": _LICENSES, "images": images, "annotations": anns}
        atomic_save_json({**coco, "categories": coco_categories()}, jsons[split])
        counts[split] = (len(images), len(anns))

    short = [c for c in cat_ids if len(valid_refs[c]) < n_shot]
    if short:
        raise ValueError(f"could not place {n_shot} valid references for categories {short}; raise n_train")
    ref_rng = np.random.default_rng([seed, 2])
    refs = {}
    for c in cat_ids:
        picked = sorted(ref_rng.permutation(len(valid_refs[c]))[:n_shot].tolist())
        refs[c] = [{"img_id": valid_refs[c][k][0], "ann_ids": [valid_refs[c][k][1]]} for k in picked]
    pkl = out / "annotations" / f"references_{n_shot}shot.pkl"
    save_reference_pkl(refs, pkl)
    return {
        "out_dir": str(out),
        "train_json": str(jsons["train"]),
        "val_json": str(jsons["val"]),
        "train_img_dir": str(img_dirs["train"]),
        "val_img_dir": str(img_dirs["val"]),
        "reference_pkl": str(pkl),
        "category_ids": cat_ids,
        "class_names": [dict(COCO_CATEGORIES)[c] for c in cat_ids],
        "class_colors": {c: bgr[c][::-1] for c in cat_ids},
        "shape_families": families,
        "distractor_colors": [c[::-1] for c in spec["distractor_colors"]],
        "confuser_colors": {c: confuser_color(bgr[c])[::-1] for c in cat_ids},
        "num_images": {s: n for s, (n, _) in counts.items()},
        "num_annotations": {s: n for s, (_, n) in counts.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m no_time_to_train.data.synthetic --out-dir data/coco [...]``."""
    p = argparse.ArgumentParser(description="Write a deterministic synthetic COCO-format dataset.")
    p.add_argument("--out-dir", required=True, help="dataset root, e.g. data/coco")
    p.add_argument("--n-train", type=int, default=6, help="train images (the reference set comes from them)")
    p.add_argument("--n-val", type=int, default=6, help="val images (the targets)")
    p.add_argument(
        "--classes", dest="class_names", type=lambda s: [n.strip() for n in s.split(",")],
        default=list(DEFAULT_CLASSES), help="comma-separated COCO class names",
    )  # fmt: skip
    p.add_argument("--n-shot", type=int, default=2, help="references per class in the pickle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=int, default=320, help="smallest image side (px)")
    p.add_argument("--max-size", type=int, default=512, help="largest image side (px)")
    p.add_argument("--large", action="store_true", help=f"image sides in {LARGE_SIZE} (benchmarks)")
    p.add_argument("--max-instances", type=int, default=4, help="annotated objects per image at most")
    p.add_argument("--empty-fraction", type=float, default=0.2, help="share of images without any class")
    p.add_argument("--image-format", choices=["jpg", "png"], default="jpg")
    p.add_argument("--segm-format", choices=["polygon", "rle"], default="polygon")
    p.add_argument("--layout", choices=["coco", "custom"], default="coco")
    p.add_argument("--train-dirname", default="train2017")
    p.add_argument("--val-dirname", default="val2017")
    p.add_argument("--overwrite", action="store_true", help="replace annotation jsons that are not synthetic")
    kwargs = vars(p.parse_args(argv))
    if kwargs.pop("large"):
        kwargs["min_size"], kwargs["max_size"] = LARGE_SIZE
    try:
        r = generate_coco_dataset(**kwargs)
    except (ValueError, DatasetError) as e:
        p.error(str(e))
    n_img, n_ann = r["num_images"], r["num_annotations"]
    print(
        f"Synthetic COCO dataset in {r['out_dir']}: train {n_img['train']} images / {n_ann['train']} "
        f"annotations, val {n_img['val']} / {n_ann['val']}; classes: {', '.join(r['class_names'])}\n"
        f"  {r['train_json']}\n  {r['val_json']}\n  {r['reference_pkl']}"
    )
    return r


if __name__ == "__main__":
    main()
