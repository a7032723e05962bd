"""``scripts/make_custom_dataset.py`` on a generated stand-in COCO (copy and ``--download``)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from no_time_to_train.data.synthetic import generate_coco_dataset

from .common import PY, SCRIPTS, run

# ----------------------------------------------------------------------------------------------
# make_custom_dataset.py


@pytest.fixture(scope="module")
def stand_in_coco(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("coco_root")
    r = generate_coco_dataset(
        out,
        n_train=7,
        n_val=1,
        class_names=("boat", "bird", "car"),
        n_shot=1,
        min_size=96,
        max_size=128,
        seed=2,
    )
    data = json.loads(Path(r["train_json"]).read_text())
    per_img: dict[int, set] = {}
    for a in data["annotations"]:
        per_img.setdefault(a["image_id"], set()).add(a["category_id"])
    bird_ref = next(i for i, c in per_img.items() if 16 in c)
    boat_ref = next(i for i, c in per_img.items() if 9 in c and i != bird_ref)
    targets = [img["id"] for img in data["images"] if img["id"] not in (bird_ref, boat_ref)][:3]
    return {"root": out, "data": data, "bird": bird_ref, "boat": boat_ref, "targets": targets}


def test_make_custom_dataset_from_stand_in_coco(stand_in_coco, tmp_path):
    c = stand_in_coco
    out = tmp_path / "my_custom_dataset"
    res = run(
        [PY, SCRIPTS / "make_custom_dataset.py", "--coco-root", c["root"], "--out-dir", out,
         "--ref-ids", f"bird={c['bird']}", f"boat={c['boat']}", "--target-ids", ",".join(map(str, c["targets"]))],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    refs = json.loads((out / "annotations/custom_references.json").read_text())
    tgts = json.loads((out / "annotations/custom_targets.json").read_text())
    two = [
        {"supercategory": "vehicle", "id": 9, "name": "boat"},
        {"supercategory": "animal", "id": 16, "name": "bird"},
    ]
    assert refs["categories"] == two and tgts["categories"] == two

    src = c["data"]["annotations"]
    expected_refs = [a for a in src if (a["image_id"], a["category_id"]) in {(c["boat"], 9), (c["bird"], 16)}]
    expected_refs.sort(key=lambda a: (a["category_id"] != 9, a["id"]))  # boat (id 9) first, json order
    assert [a["id"] for a in refs["annotations"]] == list(range(1, len(expected_refs) + 1))
    for new, old in zip(refs["annotations"], expected_refs, strict=True):
        assert "segmentation" not in new
        assert (new["bbox"], new["image_id"], new["category_id"]) == (
            old["bbox"],
            old["image_id"],
            old["category_id"],
        )
    assert {i["id"] for i in refs["images"]} == {c["bird"], c["boat"]}
    assert [i["id"] for i in tgts["images"]] == c["targets"]
    assert tgts["annotations"] == [a for a in src if a["image_id"] in c["targets"]]  # every class, untouched

    for img in refs["images"] + tgts["images"]:
        assert img["file_name"] == f"{img['id']}.jpg"
        original = c["root"] / "train2017" / f"{img['id']:012d}.jpg"
        assert (out / "images" / img["file_name"]).read_bytes() == original.read_bytes()
    vis = sorted(p.name for p in (out / "annotations/references_visualisations").iterdir())
    assert vis == ["bird_1.jpg", "boat_1.jpg"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_make_custom_dataset_download_only_on_request(stand_in_coco, tmp_path):
    c = stand_in_coco
    root = tmp_path / "coco"
    (root / "train2017").mkdir(parents=True)
    shutil.copytree(c["root"] / "annotations", root / "annotations")
    args = ["--coco-root", root, "--out-dir", tmp_path / "out", "--ref-ids", f"bird={c['bird']}",
            f"boat={c['boat']}", "--target-ids", str(c["targets"][0])]  # fmt: skip
    res = run([PY, SCRIPTS / "make_custom_dataset.py", *args], cwd=tmp_path)
    assert res.returncode == 1
    assert "3 image(s) are neither" in res.stderr and "--download" in res.stderr
    assert not (tmp_path / "out" / "annotations").exists()

    handler = functools.partial(_QuietHandler, directory=str(c["root"] / "train2017"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        res = run(
            [PY, SCRIPTS / "make_custom_dataset.py", *args, "--download", "--image-url", url], cwd=tmp_path
        )
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("Downloading") == 3
    fetched = tmp_path / "out" / "images" / f"{c['bird']}.jpg"
    assert fetched.read_bytes() == (c["root"] / "train2017" / f"{c['bird']:012d}.jpg").read_bytes()
