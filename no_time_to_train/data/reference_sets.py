"""The reference set (``memory_pkl``): which annotations are the references of each class.

Format (kept from the reference so its files load unchanged): a dict, usually an ``OrderedDict``,
mapping a COCO ``category_id`` (int) to a list of K entries, each
``{"img_id": int, "ann_ids": [int, ...]}``. Consumers use ``ann_ids[0]`` of every entry: one entry
is one reference instance.

Two encodings of that one format, chosen by the file name:

* ``*.json`` (recommended for sharing): ``{"<category_id>": [entries]}``; JSON keys are strings,
  read back as ints.
* anything else: a pickle, as the reference writes it. A pickle can carry code that runs while it
  is read, so it is read with a restricted unpickler that admits only the types of the format
  (dict / OrderedDict, list, int, str, float, bool, None) and refuses anything else, naming the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections import OrderedDict

from no_time_to_train.errors import DatasetError
from no_time_to_train.io_utils import atomic_save_json, atomic_save_pickle

ReferenceSet = "OrderedDict[int, list[dict]]"

# The only class a reference pickle may name; plain dicts, lists, ints, strings, floats, bools and
# None are built by pickle opcodes without naming any class.
_ALLOWED_CLASSES = {("collections", "OrderedDict")}


def is_json(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".json")


class _ReferenceSetUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: str):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in _ALLOWED_CLASSES:
            return super().find_class(module, name)
        raise DatasetError(
            f"{self.path} is not a plain reference pickle: it names {module}.{name}, and a reference set holds "
            "only dicts, lists, ints, strings, floats, bools and None. It was not loaded, since loading "
            "such a pickle can run arbitrary code. Ask for (or re-create) the reference set as JSON "
            "(few_shot_sampling.py / coco_to_pkl.py with an output path ending in .json)."
        )


def save_reference_pkl(refs: dict, path: str | os.PathLike) -> None:
    """Write ``refs`` atomically (JSON for ``*.json``, a pickle otherwise), after checking it has
    the documented format."""
    validate_reference_set(refs, str(path))
    if is_json(path):
        atomic_save_json({str(int(c)): v for c, v in refs.items()}, path, indent=1)
    else:
        atomic_save_pickle(OrderedDict(refs), path)


def load_reference_pkl(path: str | os.PathLike) -> OrderedDict:
    """Load and validate a reference set (JSON or restricted pickle); DatasetError with the path
    on any problem."""
    path = str(path)
    if not os.path.isfile(path):
        raise DatasetError(
            f"Reference set not found: {path}. Create it with "
            "`python no_time_to_train/dataset/few_shot_sampling.py` (COCO/VOC/LVIS) or "
            "`python no_time_to_train/dataset/coco_to_pkl.py` (custom COCO-format json), and pass it "
            "with --model.init_args.dataset_cfgs.fill_memory.memory_pkl."
        )
    with open(path, "rb") as f:
        data = f.read()
    if is_json(path):
        refs = _from_json(data, path)
    else:
        try:
            refs = _ReferenceSetUnpickler(data, path).load()
        except DatasetError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise DatasetError(f"Could not read the reference pickle {path}: {e}. Re-create the file.") from e
    validate_reference_set(refs, path)
    return OrderedDict(refs)


def _from_json(data: bytes, path: str) -> dict:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"Could not read the reference set {path}: {e}. Re-create the file.") from e
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{path}: expected an object {{category_id: [entries]}}, got {type(raw).__name__}."
        )
    out = {}
    for key, entries in raw.items():
        try:
            out[int(key)] = entries
        except ValueError:
            raise DatasetError(f"{path}: key {key!r} is not a category id (an integer).") from None
    return out


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_reference_set(refs: object, where: str) -> None:
    if not isinstance(refs, dict):
        raise DatasetError(f"{where}: expected a dict {{category_id: [entries]}}, got {type(refs).__name__}.")
    for cat_id, entries in refs.items():
        if not _is_int(cat_id) or not isinstance(entries, list):
            raise DatasetError(
                f"{where}: keys must be int category ids and values lists of entries "
                f"(got {cat_id!r}: {type(entries).__name__})."
            )
        for e in entries:
            ok = isinstance(e, dict) and _is_int(e.get("img_id")) and isinstance(e.get("ann_ids"), list)
            if not (ok and e["ann_ids"] and all(_is_int(a) for a in e["ann_ids"])):
                raise DatasetError(
                    f"{where}: category {cat_id} has a malformed entry {e!r}; each entry must be "
                    '{"img_id": int, "ann_ids": [int, ...]}.'
                )
