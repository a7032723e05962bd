"""COCO-format annotation files: reading (validated once, ``data.coco_checks``), category
selection, image file names. The one place that opens a COCO json."""

from __future__ import annotations

import contextlib
import io
import json
import os

from PIL import Image
from pycocotools.coco import COCO

from no_time_to_train.data.coco_checks import print_notes, validate_coco
from no_time_to_train.data.splits import split_class_names
from no_time_to_train.errors import ConfigError, DatasetError


def read_coco_json(path: str | os.PathLike, hint: str = "Check the path.") -> dict:
    """The raw dict of a COCO-format json (``images``, ``annotations``, ``categories`` lists);
    DatasetError naming the file if it is missing or malformed. No validation of its content:
    tools that repair or rewrite files start from this; readers use :func:`load_coco`."""
    path = str(path)
    if not os.path.isfile(path):
        raise DatasetError(f"Annotation file not found: {path}. {hint}")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise DatasetError(f"Could not read the annotation file {path} as json: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO-format json object, got {type(data).__name__}.")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(f"{path}: not a COCO-format annotation file (no list {', '.join(missing)}).")
    return data


def load_coco(json_file: str, flag: str = "json_file", role: str = "any") -> COCO:
    """Load and validate a COCO json quietly (``coco_checks``: refused problems raise, handled
    ones are printed once); DatasetError naming the file (and flag) on failure. ``role="test"``
    also checks that target ground truth has masks on all annotations or on none."""
    data = read_coco_json(json_file, f"Set it with the `{flag}` option.")
    notes = validate_coco(data, json_file, flag, role)
    print_notes(notes, json_file)
    return coco_from_dict(data)


def coco_from_dict(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def select_categories(
    coco: COCO, cat_names: list[str] | None, class_split: str | None, where: str
) -> tuple[list[int], list[str]]:
    """Sorted category ids (and their names) selected by ``cat_names`` or ``class_split``.

    ``cat_names`` wins over ``class_split``; neither selects every category of the json.
    """
    cats = coco.loadCats(coco.getCatIds())
    by_name = {c["name"]: c["id"] for c in cats}
    if cat_names:
        names, flag = list(cat_names), f"{where}.cat_names"
    elif class_split:
        try:
            names, flag = list(split_class_names(class_split, cats)), f"{where}.class_split={class_split}"
        except KeyError as e:
            raise ConfigError(f"{e.args[0]} (option {where}.class_split)") from None
    else:
        ids = sorted(by_name.values())
        return ids, [coco.cats[i]["name"] for i in ids]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(
            f"{flag}: class name(s) {missing} are not categories of the annotation file. Names must match "
            f"`categories[].name` exactly; available: {sorted(by_name)[:20]}{' ...' if len(by_name) > 20 else ''}"
        )
    ids = sorted({by_name[n] for n in names})
    return ids, [coco.cats[i]["name"] for i in ids]


def check_image_size(img: Image.Image, info: dict, root: str) -> None:
    if (img.height, img.width) != (info["height"], info["width"]):
        raise DatasetError(
            f"{os.path.join(root, image_file_name(info))}: the image is {img.width}x{img.height} but the json says "
            f"{info['width']}x{info['height']}. Use the annotation file that belongs to these images."
        )


def image_file_name(info: dict, default: str | None = None) -> str:
    """An image's file name; LVIS jsons give only ``coco_url``, whose last part is the name.
    Without either, ``default`` if given, else DatasetError."""
    name = info.get("file_name") or os.path.basename(str(info.get("coco_url", ""))) or default
    if not name:
        raise DatasetError(
            f"Image {info.get('id')} of the annotation file has neither file_name nor coco_url."
        )
    return name
