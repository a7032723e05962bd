"""Sample a K-shot reference set (``memory_pkl``) from a COCO-format annotation file.

Usage (from the repository root)::

    python no_time_to_train/dataset/few_shot_sampling.py --n-shot 10 --seed 33 \\
        --dataset few_shot_classes --out-path work_dirs/few_shot_refs/coco_10shot_33seed.pkl

The selection is seed-exact with the published reference sets: the same json, ``--seed``,
``--n-shot`` and ``--dataset`` give the identical dict, key order included. The rules that make
this so:

* one RNG stream, seeded once with ``--seed`` (same stream as ``random.seed(seed)``);
* per category, the ``(image_id, annotation_id)`` pairs in the json's annotation order;
* categories handled (and written as keys) in the order of their first annotation in the json;
* per category: shuffle the pairs, then walk them, skipping invalid annotations (see
  :func:`is_valid_annotation`) and images already used for that category, until K are taken.

A category with fewer than K usable annotations is an error, except for LVIS, whose rare classes
are padded by repeating what was found (a notice says which classes).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from no_time_to_train.data.coco import read_coco_json
from no_time_to_train.data.reference_sets import save_reference_pkl
from no_time_to_train.data.splits import (
    is_lvis_split,
    known_splits,
    split_class_names,
)
from no_time_to_train.errors import DatasetError, UserInputError, run_reporting_user_errors

COCO_TRAIN_JSON = "./data/coco/annotations/instances_train2017.json"
LVIS_TRAIN_JSON = "./data/lvis/lvis_v1_train.json"
VOC_TRAINVAL_JSON = "./data/pascal_voc/annotations/voc0712_trainval_with_segm.json"

MIN_BOX_SIDE = 32  # px: smaller boxes make poor references
MIN_BORDER_GAP = 10  # px: boxes closer to an image border are likely truncated objects

Log = Callable[[str], None]


def default_json(dataset: str) -> str:
    """The annotation file the reference samples from for ``dataset`` (paths relative to the cwd)."""
    if is_lvis_split(dataset):
        return LVIS_TRAIN_JSON
    if dataset.startswith("pascal_voc"):
        return VOC_TRAINVAL_JSON
    return COCO_TRAIN_JSON


def index_by_id(records: list[dict], what: str, where: str) -> dict[int, dict]:
    """``{id: record}`` in file order (like pycocotools: a repeated id keeps its first position)."""
    index: dict[int, dict] = {}
    for rec in records:
        if not isinstance(rec, dict) or "id" not in rec:
            raise DatasetError(f"{where}: every entry of '{what}' needs an 'id' (got {rec!r:.120}).")
        index[rec["id"]] = rec
    return index


def is_valid_annotation(ann: dict, img_width: float | None, img_height: float | None) -> bool:
    """Whether an annotation makes a usable reference.

    Invalid: a crowd region; a box ``[x, y, w, h]`` narrower or lower than 32 px; a box closer
    than 10 px to any image border. Without the image size the border test is skipped.
    """
    if ann.get("iscrowd", 0) == 1:
        return False
    x, y, w, h = ann["bbox"]
    if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
        return False
    if img_width is None or img_height is None:
        return True
    return not (
        x < MIN_BORDER_GAP
        or y < MIN_BORDER_GAP
        or img_width - (x + w) < MIN_BORDER_GAP
        or img_height - (y + h) < MIN_BORDER_GAP
    )


def split_category_ids(data: dict, dataset: str, where: str) -> list[int]:
    """Category ids of the json whose names belong to the class split ``dataset``."""
    try:
        names = split_class_names(dataset, data["categories"])
    except KeyError as e:
        raise UserInputError(str(e.args[0]) if e.args else str(e)) from e
    wanted = set(names)
    json_names = {c.get("name") for c in data["categories"]}
    missing = [n for n in names if n not in json_names]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise DatasetError(
            f"{where}: {len(missing)} class(es) of --dataset {dataset} are not in the json's "
            f"categories: {shown}. Use the annotation file of that dataset (--json) or another --dataset."
        )
    cat_ids = [c["id"] for c in data["categories"] if c.get("name") in wanted]
    if not cat_ids:
        raise DatasetError(f"{where}: --dataset {dataset} selects no category of this json.")
    return cat_ids


def _image_size(img: dict, where: str) -> tuple[float, float]:
    if "width" not in img or "height" not in img:
        raise DatasetError(
            f"{where}: image {img.get('id')!r} has no width/height, which the validity test needs."
        )
    return img["width"], img["height"]


def _pad_by_cycling(entries: list[dict], n_shot: int) -> list[dict]:
    return [dict(e, ann_ids=list(e["ann_ids"])) for e in (entries[i % len(entries)] for i in range(n_shot))]


def sample_references(
    data: dict,
    cat_ids: Sequence[int],
    n_shot: int,
    seed: int,
    *,
    pad_with_duplicates: bool = False,
    where: str = "annotation file",
    log: Log = print,
) -> OrderedDict:
    """Sample ``n_shot`` reference instances per category (the seed-exact algorithm, see module doc).

    Args:
        data: the loaded COCO-format json.
        cat_ids: categories to sample (their order does not matter: keys follow the json).
        pad_with_duplicates: LVIS behaviour. With fewer than ``n_shot`` valid instances, repeat the
            ones found (cycling); with none, use invalid ones instead. Otherwise raise DatasetError.

    Returns:
        ``OrderedDict{category_id: [{"img_id": int, "ann_ids": [int]}] * n_shot}``.
    """
    if n_shot < 1:
        raise UserInputError(f"--n-shot must be at least 1 (got {n_shot}).")
    rng = random.Random(seed)  # the same stream as random.seed(seed)
    imgs = index_by_id(data["images"], "images", where)
    anns = index_by_id(data["annotations"], "annotations", where)
    cat_names = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
    selected = set(cat_ids)

    pairs_by_cat: dict[int, list[tuple[int, int]]] = {}
    for ann_id, ann in anns.items():
        if "image_id" not in ann or not isinstance(ann.get("bbox"), list) or len(ann["bbox"]) != 4:
            raise DatasetError(f"{where}: annotation {ann_id} needs an 'image_id' and a 4-number 'bbox'.")
        if ann.get("category_id") in selected:
            pairs_by_cat.setdefault(ann["category_id"], []).append((ann["image_id"], ann_id))

    refs: OrderedDict[int, list[dict]] = OrderedDict()
    short: list[tuple[int, int]] = []  # (category id, number of usable instances found)
    padded: list[tuple[int, int, bool]] = []  # (category id, found, found only invalid ones)
    for cat_id, pairs in pairs_by_cat.items():
        rng.shuffle(pairs)
        taken: list[dict] = []
        used_imgs: set[int] = set()
        invalid: list[dict] = []
        for img_id, ann_id in pairs:
            img = imgs.get(img_id)
            if img is None:
                raise DatasetError(f"{where}: annotation {ann_id} refers to a missing image {img_id!r}.")
            if not is_valid_annotation(anns[ann_id], *_image_size(img, where)):
                invalid.append({"img_id": img_id, "ann_ids": [ann_id]})
                continue
            if img_id in used_imgs:
                continue
            used_imgs.add(img_id)
            taken.append({"img_id": img_id, "ann_ids": [ann_id]})
            if len(taken) >= n_shot:
                break
        if len(taken) < n_shot:
            if not pad_with_duplicates:
                short.append((cat_id, len(taken)))
                continue
            only_invalid = not taken
            if only_invalid:
                # Prefer distinct images among the invalid ones too (stable order otherwise).
                seen: set[int] = set()
                repeat = []
                for e in invalid:
                    (repeat if e["img_id"] in seen else taken).append(e)
                    seen.add(e["img_id"])
                taken = (taken + repeat)[:n_shot]
            padded.append((cat_id, len(taken), only_invalid))
            taken = _pad_by_cycling(taken, n_shot)
        refs[cat_id] = taken

    if short:
        raise DatasetError(_shortfall_message(short, cat_names, n_shot, where))
    absent = [c for c in cat_ids if c not in pairs_by_cat]
    if absent:
        names = ", ".join(f"{cat_names.get(c, c)!r} (id {c})" for c in absent[:20])
        names += f", and {len(absent) - 20} more" if len(absent) > 20 else ""
        if not pad_with_duplicates:
            raise DatasetError(
                f"{where}: {len(absent)} selected class(es) have no annotation at all: {names}. "
                "Use another --dataset or annotation file."
            )
        log(f"Warning: {len(absent)} class(es) have no annotation and are left out: {names}")
    if padded:
        log(_padding_notice(padded, cat_names, n_shot))
    return refs


def _shortfall_message(short: list[tuple[int, int]], cat_names: dict, n_shot: int, where: str) -> str:
    listed = "; ".join(f"{cat_names.get(c, c)!r} (id {c}): {n} found" for c, n in short[:20])
    more = f"; and {len(short) - 20} more" if len(short) > 20 else ""
    best = min(n for _, n in short)
    if best > 0:
        advice = f"Use --n-shot {best} or fewer, or another annotation file."
    else:
        advice = "Some classes have no usable instance at all: use another --dataset or annotation file."
    return (
        f"{where}: not enough valid reference instances for {len(short)} class(es) at --n-shot {n_shot} "
        f"(usable = not crowd, box at least {MIN_BOX_SIDE}x{MIN_BOX_SIDE} px and at least "
        f"{MIN_BORDER_GAP} px from every image border, one instance per image): {listed}{more}. {advice}"
    )


def _padding_notice(padded: list[tuple[int, int, bool]], cat_names: dict, n_shot: int) -> str:
    def one(cat_id: int, found: int, only_invalid: bool) -> str:
        kind = "invalid only" if only_invalid else "valid"
        return f"{cat_names.get(cat_id, cat_id)!r} (id {cat_id}): {found} {kind}"

    listed = "; ".join(one(*p) for p in padded[:20])
    more = f"; and {len(padded) - 20} more" if len(padded) > 20 else ""
    return (
        f"Notice: {len(padded)} class(es) have fewer than {n_shot} usable instances and were padded "
        f"to {n_shot} by repeating the ones found: {listed}{more}."
    )


def sample_few_shot(
    json_path: str | os.PathLike, dataset: str, n_shot: int, seed: int = 42, log: Log = print
) -> tuple[OrderedDict, dict]:
    """Load ``json_path`` and sample ``n_shot`` references per class of ``dataset``.

    Returns the reference dict and the loaded json (for plotting).
    """
    if dataset not in known_splits():
        raise UserInputError(f"Unknown --dataset {dataset!r}; known: {', '.join(known_splits())}.")
    hint = "Set up the dataset (see data/README.md) or point --json at a COCO-format annotation file."
    data = read_coco_json(json_path, hint)
    where = str(json_path)
    cat_ids = split_category_ids(data, dataset, where)
    refs = sample_references(
        data, cat_ids, n_shot, seed, pad_with_duplicates=is_lvis_split(dataset), where=where, log=log
    )
    return refs, data


# ----------------------------------------------------------------------------------------------
# Plots


def annotation_mask(ann: dict, height: int, width: int):
    """Binary ``(H, W)`` uint8 mask of a COCO annotation (polygons, RLE, or its box if neither)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    rle = None
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        if polys:
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and "counts" in seg:
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
    if rle is not None:
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(np.uint8)
    out = np.zeros((height, width), np.uint8)
    x, y, w, h = (int(round(v)) for v in ann["bbox"])
    out[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = 1
    return out


def _xyxy(ann: dict) -> list[float]:
    x, y, w, h = (float(v) for v in ann["bbox"])
    return [x, y, x + w - 1, y + h - 1]


def plot_references(refs: dict, data: dict, img_dir: str, out_dir: str | os.PathLike) -> int:
    """For every reference, save ``{cat}_v{i}_{img}_mask.png`` (its mask over the image) and
    ``{cat}_v{i}_{img}_all_anns.png`` (all annotations of that image) under ``out_dir``.

    Images are drawn at their original size with ``output.drawing`` (the project's palette).
    Returns the number of files written.
    """
    from no_time_to_train.data.coco import image_file_name
    from no_time_to_train.data.images import load_rgb
    from no_time_to_train.output.drawing import draw_instances, save_image

    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    imgs = index_by_id(data["images"], "images", "annotation file")
    anns = index_by_id(data["annotations"], "annotations", "annotation file")
    cat_ids = sorted(c["id"] for c in data["categories"])
    class_of = {c: i for i, c in enumerate(cat_ids)}  # the palette's class index
    names_by_id = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
    names = [names_by_id[c] for c in cat_ids] + ["?"]
    anns_by_img: dict[int, list[dict]] = {}
    for ann in anns.values():
        anns_by_img.setdefault(ann["image_id"], []).append(ann)

    def draw(image: np.ndarray, drawn: list[dict]) -> np.ndarray:
        h, w = image.shape[:2]
        masks = np.stack([annotation_mask(a, h, w).astype(bool) for a in drawn])
        labels = [class_of.get(a.get("category_id"), len(cat_ids)) for a in drawn]
        return draw_instances(image, masks, [_xyxy(a) for a in drawn], labels, names=names)

    written = 0
    for cat_id, entries in refs.items():
        for i, entry in enumerate(entries):
            img_id = entry["img_id"]
            image = np.asarray(
                load_rgb(os.path.join(img_dir, image_file_name(imgs[img_id])), "Check --img-dir.")
            )
            stem = os.path.join(out_dir, f"{cat_id}_v{i}_{img_id}")
            save_image(f"{stem}_mask.png", draw(image, [anns[a] for a in entry["ann_ids"]]))
            save_image(f"{stem}_all_anns.png", draw(image, anns_by_img.get(img_id, [])))
            written += 2
    return written


def viz_dir_for(out_path: str | os.PathLike) -> str:
    """``<out-path minus .pkl or .json>_viz``."""
    out_path = str(out_path)
    stem = next((out_path[: -len(x)] for x in (".pkl", ".json") if out_path.endswith(x)), out_path)
    return f"{stem}_viz"


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Sample a K-shot reference set (pickle {category_id: [{img_id, ann_ids}]}) "
        "from a COCO-format annotation file."
    )
    parser.add_argument("--n-shot", type=int, required=True, help="references per class (K)")
    parser.add_argument(
        "--out-path",
        required=True,
        help="output reference set: refs_10shot_33seed.pkl (pickle) or .json (JSON, for sharing)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--dataset",
        default="coco",
        help="class split: coco, default_classes, few_shot_classes, coco_semantic_split_1..4, "
        "lvis, lvis_common/frequent/rare, lvis_minival*, pascal_voc_split_1..3 (default coco)",
    )
    parser.add_argument(
        "--json",
        default=None,
        help=f"annotation file to sample from (default: {COCO_TRAIN_JSON} for COCO splits, "
        f"{LVIS_TRAIN_JSON} for LVIS, {VOC_TRAINVAL_JSON} for VOC)",
    )
    parser.add_argument("--plot", action="store_true", help="also draw every reference (needs --img-dir)")
    parser.add_argument("--img-dir", default=None, help="image folder of the annotation file (for --plot)")
    return parser


def write_references(args: argparse.Namespace, json_path: str) -> None:
    """Sample, save (and with ``--plot`` draw) the references that ``main``'s arguments ask for."""
    refs, data = sample_few_shot(json_path, args.dataset, args.n_shot, args.seed)
    save_reference_pkl(refs, args.out_path)
    print(
        f"Sampled {args.n_shot} reference(s) for each of {len(refs)} classes of {args.dataset} "
        f"(seed {args.seed}) from {json_path}; saved to {args.out_path}"
    )
    if args.plot:
        viz_dir = viz_dir_for(args.out_path)
        n = plot_references(refs, data, args.img_dir, viz_dir)
        print(f"Wrote {n} visualisations to {viz_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot and not args.img_dir:
        parser.error("--plot needs --img-dir (the folder holding the json's images)")
    if args.n_shot < 1:
        parser.error(f"--n-shot must be at least 1 (got {args.n_shot})")
    if args.dataset not in known_splits():
        parser.error(f"unknown --dataset {args.dataset!r}; choose one of: {', '.join(known_splits())}")
    json_path = args.json or default_json(args.dataset)
    return run_reporting_user_errors(write_references, args, json_path)


if __name__ == "__main__":
    sys.exit(main())
