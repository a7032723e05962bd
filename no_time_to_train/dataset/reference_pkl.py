"""The reference-set pickle (``memory_pkl``).

Format (kept from the reference so its files load unchanged): a pickled dict, usually an
``OrderedDict``, mapping a COCO ``category_id`` (int) to a list of K entries, each
``{"img_id": int, "ann_ids": [int, ...]}``. Consumers use ``ann_ids[0]`` of every entry: one entry
is one reference instance.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

from ..errors import DatasetError
from ..io_utils import atomic_save_pickle

ReferenceSet = "OrderedDict[int, list[dict]]"


def save_reference_pkl(refs: dict, path: str | os.PathLike) -> None:
    """Write ``refs`` atomically, after checking it has the documented format."""
    validate_reference_set(refs, str(path))
    atomic_save_pickle(OrderedDict(refs), path)


def load_reference_pkl(path: str | os.PathLike) -> OrderedDict:
    """Load and validate a reference pickle; raises DatasetError with the path on any problem."""
    path = str(path)
    if not os.path.isfile(path):
        raise DatasetError(
            f"Reference pickle not found: {path}. Create it with "
            "`python no_time_to_train/dataset/few_shot_sampling.py` (COCO/VOC/LVIS) or "
            "`python no_time_to_train/dataset/coco_to_pkl.py` (custom COCO-format json), and pass it "
            "with --model.init_args.dataset_cfgs.fill_memory.memory_pkl."
        )
    try:
        with open(path, "rb") as f:
            refs = pickle.load(f)
    except Exception as e:  # truncated or not a pickle at all
        raise DatasetError(f"Could not read the reference pickle {path}: {e}. Re-create the file.") from e
    validate_reference_set(refs, path)
    return OrderedDict(refs)


def validate_reference_set(refs: object, where: str) -> None:
    if not isinstance(refs, dict):
        raise DatasetError(f"{where}: expected a dict {{category_id: [entries]}}, got {type(refs).__name__}.")
    for cat_id, entries in refs.items():
        if not isinstance(cat_id, int) or not isinstance(entries, list):
            raise DatasetError(
                f"{where}: keys must be int category ids and values lists of entries "
                f"(got {cat_id!r}: {type(entries).__name__})."
            )
        for e in entries:
            if not (isinstance(e, dict) and "img_id" in e and e.get("ann_ids")):
                raise DatasetError(
                    f"{where}: category {cat_id} has a malformed entry {e!r}; each entry must be "
                    '{"img_id": int, "ann_ids": [int, ...]}.'
                )
