"""Turn a COCO-format reference json (e.g. a custom dataset) into a reference pickle.

Usage (from the repository root)::

    python no_time_to_train/dataset/coco_to_pkl.py \\
        data/my_custom_dataset/annotations/custom_references_with_segm.json \\
        data/my_custom_dataset/annotations/custom_references_with_segm.pkl 1

Every annotation is one reference instance: ``{"img_id": image_id, "ann_ids": [ann_id]}``.
(The reference tool grouped the annotations of an image into one entry and repeated that entry,
so an image with several instances contributed its first instance several times.)
Keys are the category ids in ascending order; each category ends with exactly
``target_examples`` entries, because the fill step requires exactly ``memory_length`` per class:

* fewer: all annotations, then duplicates drawn with a seeded RNG;
* more: a seeded sample that prefers valid annotations (same rule as ``few_shot_sampling``:
  not crowd, box at least 32 px, at least 10 px from the borders) and distinct images.

Each category draws from its own RNG seeded by ``--seed`` and its id, so adding or removing a
class does not change the others. Categories without any annotation are skipped with a warning.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence

from no_time_to_train.data.coco import read_coco_json
from no_time_to_train.data.reference_sets import save_reference_pkl
from no_time_to_train.errors import DatasetError, UserInputError, run_reporting_user_errors
from no_time_to_train.tools.few_shot_sampling import (
    index_by_id,
    is_valid_annotation,
)

Log = Callable[[str], None]


def category_rng(seed: int, cat_id: int) -> random.Random:
    """The RNG used for one category (deterministic across runs and Python processes)."""
    return random.Random(f"coco_to_pkl/{seed}/{cat_id}")


def _select(anns: list[dict], imgs: dict[int, dict], target: int, rng: random.Random) -> list[dict]:
    """Pick ``target`` of ``anns``: valid before invalid, new images before repeated ones.

    The candidates are shuffled once; four passes then take (valid, new image), (valid, any image),
    (invalid, new image), (invalid, any image). Returned in json order.
    """
    order = list(range(len(anns)))
    rng.shuffle(order)

    def valid(i: int) -> bool:
        img = imgs.get(anns[i]["image_id"], {})
        return is_valid_annotation(anns[i], img.get("width"), img.get("height"))

    chosen: list[int] = []
    chosen_set: set[int] = set()
    used_imgs: set[int] = set()
    for want_valid in (True, False):
        for new_image_only in (True, False):
            for i in order:
                if len(chosen) >= target:
                    break
                if i in chosen_set or valid(i) != want_valid:
                    continue
                if new_image_only and anns[i]["image_id"] in used_imgs:
                    continue
                chosen.append(i)
                chosen_set.add(i)
                used_imgs.add(anns[i]["image_id"])
    return [anns[i] for i in sorted(chosen)]


def _entry(ann: dict) -> dict:
    return {"img_id": ann["image_id"], "ann_ids": [ann["id"]]}


def coco_to_references(
    data: dict, target: int, seed: int = 42, log: Log = print, where: str = "input json"
) -> OrderedDict:
    """Reference dict with exactly ``target`` single-instance entries per annotated category."""
    if target < 1:
        raise UserInputError(f"target_examples must be at least 1 (got {target}).")
    imgs = index_by_id(data["images"], "images", where)
    anns = index_by_id(data["annotations"], "annotations", where)
    cats = index_by_id(data["categories"], "categories", where)

    anns_by_cat: dict[int, list[dict]] = {c: [] for c in cats}
    unknown: set = set()
    for ann_id, ann in anns.items():
        if "image_id" not in ann or "category_id" not in ann:
            raise DatasetError(f"{where}: annotation {ann_id} needs an 'image_id' and a 'category_id'.")
        if ann["category_id"] not in cats:
            unknown.add(ann["category_id"])
            continue
        anns_by_cat[ann["category_id"]].append(ann)
    if unknown:
        log(f"Warning: annotations of category ids {sorted(unknown)} are not in 'categories'; ignored.")

    refs: OrderedDict[int, list[dict]] = OrderedDict()
    empty: list[str] = []
    for cat_id in sorted(anns_by_cat):
        cat_anns = anns_by_cat[cat_id]
        name = cats[cat_id].get("name", cat_id)
        n = len(cat_anns)
        if n == 0:
            empty.append(f"{name!r} (id {cat_id})")
            continue
        rng = category_rng(seed, cat_id)
        if n < target:
            extra = rng.choices(cat_anns, k=target - n)
            entries = [_entry(a) for a in cat_anns + extra]
            log(
                f"Category {name!r} (id {cat_id}): {n} annotation(s), padded to {target} "
                f"with {len(extra)} duplicate(s) (seed {seed})."
            )
        elif n > target:
            picked = _select(cat_anns, imgs, target, rng)
            entries = [_entry(a) for a in picked]
            log(f"Category {name!r} (id {cat_id}): {n} annotations, sampled {target} (seed {seed}).")
        else:
            entries = [_entry(a) for a in cat_anns]
        refs[cat_id] = entries
    if empty:
        more = f", and {len(empty) - 20} more" if len(empty) > 20 else ""
        log(
            f"Warning: {len(empty)} category(ies) have no annotation and are left out of the pickle: "
            f"{', '.join(empty[:20])}{more}."
        )
    if not refs:
        raise DatasetError(f"{where}: no category has any annotation; nothing to write.")
    return refs


def coco_json_to_pkl(
    input_json: str | os.PathLike,
    output_pkl: str | os.PathLike,
    target: int,
    seed: int = 42,
    log: Log = print,
) -> OrderedDict:
    """Read ``input_json``, build the reference dict and write it atomically to ``output_pkl``."""
    if target < 1:
        raise UserInputError(f"target_examples must be at least 1 (got {target}).")
    data = read_coco_json(input_json)
    refs = coco_to_references(data, target, seed, log, where=str(input_json))
    save_reference_pkl(refs, output_pkl)
    return refs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a COCO-format reference json into a reference pickle with exactly "
        "target_examples instances per category."
    )
    parser.add_argument("input_json", help="COCO-format json with the reference annotations")
    parser.add_argument("output_pkl", help="reference set to write: a pickle, or JSON when it ends in .json")
    parser.add_argument("target_examples", type=int, help="instances per category (the memory length)")
    parser.add_argument("--seed", type=int, default=42, help="seed for padding / sampling (default 42)")
    return parser


def convert(args: argparse.Namespace) -> None:
    """``coco_json_to_pkl`` with ``main``'s arguments, then a one-line summary."""
    refs = coco_json_to_pkl(args.input_json, args.output_pkl, args.target_examples, args.seed)
    ids = ", ".join(str(c) for c in list(refs)[:20]) + (", ..." if len(refs) > 20 else "")
    print(
        f"Wrote {args.target_examples} reference(s) for each of {len(refs)} categories "
        f"(ids {ids}) to {args.output_pkl}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.target_examples < 1:
        parser.error(f"target_examples must be at least 1 (got {args.target_examples})")
    return run_reporting_user_errors(convert, args)


if __name__ == "__main__":
    sys.exit(main())
