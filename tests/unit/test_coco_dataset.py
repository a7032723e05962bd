"""The shard store behind --export_dataset: counting, a line cut by a kill, first line wins,
assembly order and ids, the manifest's refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from no_time_to_train.errors import UserInputError
from no_time_to_train.output.coco_dataset import ExportSettings, ShardStore, image_record, skipped_record


def _record(name: str, score: float) -> dict:
    masks = np.zeros((1, 4, 5), bool)
    masks[0, 1:3, 1:4] = True
    return image_record(name, 5, 4, masks, np.array([[1.0, 1.0, 3.0, 2.0]]), np.array([score]), np.array([0]),
                        [7], ExportSettings())  # fmt: skip


def test_shards_count_incrementally_ignore_cut_lines_and_keep_the_first(tmp_path):
    store = ShardStore(tmp_path / "out.json")
    store.prepare({"a": 1})
    w = store.open_shard(0)
    w.write(_record("b.png", 0.9))
    seen: dict = {}
    assert store.count_lines(seen) == 1
    w.write(skipped_record("c.png", "truncated\nfile"))
    w.write(_record("b.png", 0.1))  # a padded duplicate from another process: the first wins
    assert store.count_lines(seen) == 3 == store.count_lines()  # incremental equals a full count
    w.close()
    with open(store.shards()[0], "a") as f:
        f.write('{"file_name": "a.png", "wid')  # a kill in the middle of a line
    assert set(store.done()) == {"b.png", "c.png"}
    summary = store.assemble(["a.png", "b.png", "c.png"], [{"id": 7, "name": "boat"}],
                             skipped_path=str(tmp_path / "skipped.txt"))  # fmt: skip
    ds = json.loads((tmp_path / "out.json").read_text())
    assert ds["images"] == [{"id": 2, "file_name": "b.png", "width": 5, "height": 4}]
    (ann,) = ds["annotations"]
    assert (ann["id"], ann["image_id"], ann["category_id"], ann["score"], ann["area"]) == (1, 2, 7, 0.9, 6.0)
    assert ann["bbox"] == [1.0, 1.0, 2.0, 1.0] and ann["iscrowd"] == 0
    assert summary["missing"] == ["a.png"] and summary["per_category"] == {7: 1}
    assert (tmp_path / "skipped.txt").read_text() == "c.png\ttruncated file\n"


def test_a_manifest_with_other_settings_is_refused_naming_the_key(tmp_path):
    store = ShardStore(tmp_path / "out.json")
    assert store.prepare({"export": {"score_thr": 0.0}, "images": "x"}) == 0
    with pytest.raises(UserInputError, match=r"export.score_thr: 0.0 -> 0.5\).*--overwrite"):
        store.prepare({"export": {"score_thr": 0.5}, "images": "x"})
    assert store.prepare({"export": {"score_thr": 0.5}, "images": "x"}, overwrite=True) == 0
