"""Build the README's toy custom dataset (boat + bird, 1-shot) from COCO train2017.

Usage (from the repository root)::

    python scripts/make_custom_dataset.py              # images from data/coco/train2017
    python scripts/make_custom_dataset.py --download   # fetch missing images from images.cocodataset.org

Reads ``<coco-root>/annotations/instances_train2017.json`` and writes::

    data/my_custom_dataset/
        annotations/custom_references.json     reference images: every (non-crowd) box of the
                                               reference class, no segmentation, ids from 1
        annotations/custom_targets.json        target images with all their annotations;
                                               ``categories`` = the selected classes only
        annotations/references_visualisations/{class}_{i}.jpg   box previews (i from 1)
        images/<image id>.jpg                   references and targets (``file_name`` updated)

Then add masks to the references with ``no_time_to_train/dataset/sam_bbox_to_segm_batch.py`` and
follow the custom-dataset section of the README. ``--ref-ids``, ``--target-ids``, ``--coco-root``
and ``--out-dir`` make the same layout from any COCO-format dataset.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from no_time_to_train.data.coco import image_file_name, read_coco_json
from no_time_to_train.data.images import load_rgb
from no_time_to_train.errors import DatasetError, UserInputError, run_reporting_user_errors
from no_time_to_train.io_utils import atomic_open, atomic_save_json
from no_time_to_train.output.drawing import draw_instances, save_image

DEFAULT_REFS: dict[str, list[int]] = {"bird": [429819], "boat": [101435]}
DEFAULT_TARGETS: list[int] = [98636, 361948, 456065, 42279, 517410, 439274, 407180, 459673, 481301, 460598]
COCO_IMAGE_URL = "http://images.cocodataset.org/train2017/"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"


def parse_ref_ids(items: Sequence[str]) -> dict[str, list[int]]:
    """``["bird=429819", "boat=101435,2"]`` -> ``{"bird": [429819], "boat": [101435, 2]}``."""
    refs: dict[str, list[int]] = {}
    for item in items:
        name, sep, ids = item.partition("=")
        if not sep or not name.strip() or not ids.strip():
            raise UserInputError(f"--ref-ids expects CLASS=ID[,ID...] items, got {item!r}.")
        try:
            refs.setdefault(name.strip(), []).extend(int(v) for v in ids.split(",") if v.strip())
        except ValueError as err:
            raise UserInputError(f"--ref-ids {item!r}: image ids must be integers.") from err
    return refs


def parse_ids(items: Sequence[str]) -> list[int]:
    """``["1,2", "3"]`` -> ``[1, 2, 3]`` (duplicates dropped, order kept)."""
    try:
        ids = [int(v) for item in items for v in str(item).split(",") if v.strip()]
    except ValueError as err:
        raise UserInputError(f"--target-ids: image ids must be integers (got {list(items)}).") from err
    return list(dict.fromkeys(ids))


def _load_json(path: Path) -> dict:
    return read_coco_json(
        path,
        f"Download {COCO_ANNOTATIONS_URL}, unzip it into <coco-root>/ (it creates "
        "annotations/instances_train2017.json), or pass --coco-root or --annotations.",
    )


def _image_file(img: dict) -> str:
    return image_file_name(img, default=f"{img['id']:012d}.jpg")


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_open(dest, "wb") as f:
        shutil.copyfileobj(response, f)


def copy_images(
    images: list[dict], src_dir: Path, out_dir: Path, download: bool, base_url: str, log=print
) -> dict[int, str]:
    """Copy (or with ``download`` fetch) every image to ``out_dir/<id>.<ext>``; returns id -> new name."""
    names: dict[int, str] = {}
    todo = []
    for img in images:
        src_name = _image_file(img)
        new_name = f"{img['id']}{Path(src_name).suffix or '.jpg'}"
        names[img["id"]] = new_name
        if not (out_dir / new_name).is_file():
            todo.append((img, src_name, new_name))
    missing = [(img, s, n) for img, s, n in todo if not (src_dir / s).is_file()]
    if missing and not download:
        shown = ", ".join(str(src_dir / s) for _, s, _ in missing[:5])
        more = f" ({len(missing)} in all)" if len(missing) > 5 else ""
        raise DatasetError(
            f"{len(missing)} image(s) are neither in {out_dir} nor in {src_dir}: {shown}{more}. Put COCO "
            f"train2017 under --coco-root, or pass --download to fetch them from {base_url}."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for _img, src_name, new_name in todo:
        src = src_dir / src_name
        if src.is_file():
            with open(src, "rb") as fin, atomic_open(out_dir / new_name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            continue
        url = base_url.rstrip("/") + "/" + src_name
        log(f"Downloading {url}")
        try:
            _download(url, out_dir / new_name)
        except (urllib.error.URLError, OSError) as err:
            failed.append(f"{url} ({err})")
    if failed:
        raise DatasetError(
            f"Could not download {len(failed)} image(s): {'; '.join(failed[:3])}. Check the network, or put "
            "COCO train2017 under --coco-root and run without --download."
        )
    return names


def build_custom_dataset(
    coco: dict, refs: dict[str, list[int]], target_ids: list[int]
) -> tuple[dict, dict, list[tuple[str, int, list[dict]]]]:
    """The two jsons (with the original ``file_name``) and ``[(class, image id, boxes)]`` previews.

    References: for each (class, image) every non-crowd annotation of that class, without
    ``segmentation``, renumbered from 1. Targets: the images with all their original annotations.
    Both jsons list only the selected categories, in ascending id order.
    """
    cats_by_name = {c["name"]: c for c in coco["categories"]}
    unknown = [n for n in refs if n not in cats_by_name]
    if unknown:
        raise UserInputError(
            f"--ref-ids: class(es) {unknown} are not COCO categories of the annotation file."
        )
    images = {img["id"]: img for img in coco["images"]}
    absent = sorted({i for ids in refs.values() for i in ids}.union(target_ids) - set(images))
    if absent:
        raise UserInputError(f"Image id(s) {absent[:10]} are not in the annotation file.")
    overlap = sorted({i for ids in refs.values() for i in ids} & set(target_ids))
    if overlap:
        raise UserInputError(f"Image id(s) {overlap} are both references and targets.")
    categories = sorted((dict(cats_by_name[n]) for n in refs), key=lambda c: c["id"])
    anns_by_img: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        anns_by_img.setdefault(ann["image_id"], []).append(ann)

    ref_images, ref_anns, previews = [], [], []
    for name in sorted(refs, key=lambda n: cats_by_name[n]["id"]):
        cat_id = cats_by_name[name]["id"]
        for img_id in refs[name]:
            boxes = [
                a for a in anns_by_img.get(img_id, []) if a["category_id"] == cat_id and not a.get("iscrowd")
            ]
            if not boxes:
                raise UserInputError(
                    f"Reference image {img_id} has no (non-crowd) annotation of class {name!r}."
                )
            if img_id not in {img["id"] for img in ref_images}:
                ref_images.append(dict(images[img_id]))
            for ann in boxes:
                new = {k: v for k, v in ann.items() if k != "segmentation"}
                new["id"] = len(ref_anns) + 1
                ref_anns.append(new)
            previews.append((name, img_id, boxes))
    info = {**coco.get("info", {}), "description": "no_time_to_train custom dataset (references)"}
    references = {
        "info": info,
        "licenses": coco.get("licenses", []),
        "images": ref_images,
        "annotations": ref_anns,
        "categories": categories,
    }
    targets = {
        "info": {**info, "description": "no_time_to_train custom dataset (targets)"},
        "licenses": coco.get("licenses", []),
        "images": [dict(images[i]) for i in target_ids],
        "annotations": [dict(a) for i in target_ids for a in anns_by_img.get(i, [])],
        "categories": categories,
    }
    return references, targets, previews


def draw_boxes(src: Path, dest: Path, boxes: list[dict], label: str, class_index: int = 0) -> None:
    """A preview of one reference image: its boxes in the class's colour, with the class name."""
    image = np.asarray(load_rgb(str(src)))
    xyxy = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2] - 1, a["bbox"][1] + a["bbox"][3] - 1]
            for a in boxes]  # fmt: skip
    names = [label] * (class_index + 1)
    empty = np.zeros((len(boxes), *image.shape[:2]), bool)
    save_image(str(dest), draw_instances(image, empty, xyxy, [class_index] * len(boxes), names=names), 92)


def make_custom_dataset(
    coco_root: str | os.PathLike = "data/coco",
    out_dir: str | os.PathLike = "data/my_custom_dataset",
    refs: dict[str, list[int]] | None = None,
    target_ids: Sequence[int] | None = None,
    annotations: str | os.PathLike | None = None,
    image_subdir: str = "train2017",
    download: bool = False,
    image_url: str = COCO_IMAGE_URL,
    log=print,
) -> dict[str, Path]:
    """Write the custom dataset (see the module docstring); returns the paths written."""
    coco_root, out = Path(coco_root), Path(out_dir)
    refs = dict(DEFAULT_REFS if refs is None else refs)
    target_ids = list(DEFAULT_TARGETS if target_ids is None else target_ids)
    ann_path = (
        Path(annotations) if annotations else coco_root / "annotations" / f"instances_{image_subdir}.json"
    )
    log(f"Reading {ann_path}")
    coco = _load_json(ann_path)
    references, targets, previews = build_custom_dataset(coco, refs, target_ids)

    img_dir = out / "images"
    all_images = {img["id"]: img for img in references["images"] + targets["images"]}
    names = copy_images(
        list(all_images.values()), coco_root / image_subdir, img_dir, download, image_url, log
    )
    for data in (references, targets):
        for img in data["images"]:
            img["file_name"] = names[img["id"]]
    ann_dir = out / "annotations"
    paths = {
        "references": ann_dir / "custom_references.json",
        "targets": ann_dir / "custom_targets.json",
        "images": img_dir,
        "visualisations": ann_dir / "references_visualisations",
    }
    atomic_save_json(references, paths["references"])
    atomic_save_json(targets, paths["targets"])
    counters: dict[str, int] = {}
    for name, img_id, boxes in previews:
        counters[name] = counters.get(name, 0) + 1
        dest = paths["visualisations"] / f"{name}_{counters[name]}.jpg"
        index = [c["name"] for c in sorted(references["categories"], key=lambda c: c["id"])].index(name)
        draw_boxes(img_dir / names[img_id], dest, boxes, name, index)
    classes = ", ".join(c["name"] for c in references["categories"])
    log(
        f"Custom dataset in {out}: {len(references['images'])} reference image(s) "
        f"({len(references['annotations'])} boxes of {classes}), "
        f"{len(targets['images'])} target image(s) ({len(targets['annotations'])} annotations)."
    )
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build the boat+bird 1-shot custom dataset of the README from a local COCO train2017."
    )
    parser.add_argument("--coco-root", default="data/coco", help="COCO folder (default: %(default)s)")
    parser.add_argument(
        "--annotations",
        default=None,
        help="annotation json (default: <coco-root>/annotations/instances_train2017.json)",
    )
    parser.add_argument(
        "--out-dir", default="data/my_custom_dataset", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--ref-ids",
        nargs="+",
        default=None,
        metavar="CLASS=ID[,ID]",
        help="reference image(s) per class (default: bird=429819 boat=101435)",
    )
    parser.add_argument(
        "--target-ids",
        nargs="+",
        default=None,
        metavar="ID",
        help="target image ids (default: the README's 10)",
    )
    parser.add_argument("--download", action="store_true", help="download images missing under --coco-root")
    parser.add_argument(
        "--image-url", default=COCO_IMAGE_URL, help="base URL for --download (default: %(default)s)"
    )
    return parser


def make_from_args(args: argparse.Namespace) -> None:
    """``make_custom_dataset`` with ``main``'s arguments (ids parsed here)."""
    refs = parse_ref_ids(args.ref_ids) if args.ref_ids else None
    targets = parse_ids(args.target_ids) if args.target_ids else None
    make_custom_dataset(
        args.coco_root, args.out_dir, refs, targets, annotations=args.annotations,
        download=args.download, image_url=args.image_url,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return run_reporting_user_errors(make_from_args, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
