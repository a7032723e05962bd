"""Reference-set tools: few_shot_sampling (seed-exact sampling) and coco_to_pkl (custom jsons)."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest

from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.data.splits import COCO_CATEGORIES, METAINFO
from no_time_to_train.errors import DatasetError, UserInputError
from no_time_to_train.tools import coco_to_pkl, few_shot_sampling
from no_time_to_train.tools.few_shot_sampling import (
    is_valid_annotation,
    sample_few_shot,
    sample_references,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
COCO_ID = {name: cid for cid, name in COCO_CATEGORIES}


# ----------------------------------------------------------------------------------------------
# Helpers: tiny COCO-format jsons


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def ann(ann_id, img_id, cat_id, bbox, iscrowd=0, segmentation=None) -> dict:
    x, y, w, h = bbox
    seg = segmentation if segmentation is not None else [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "id": ann_id,
        "image_id": img_id,
        "category_id": cat_id,
        "bbox": list(bbox),
        "area": w * h,
        "iscrowd": iscrowd,
        "segmentation": seg,
    }


def image(img_id, width=200, height=200) -> dict:
    return {"id": img_id, "file_name": f"{img_id:06d}.png", "width": width, "height": height}


def random_coco(
    gen_seed: int, names: tuple[str, ...], extra_names=("truck", "elephant"), n_images=60
) -> dict:
    """A random COCO-style json: every class of ``names`` has >= 4 valid instances on distinct
    images, plus random (often invalid) boxes and crowd regions; annotation ids are not monotonic,
    the annotation order is shuffled and ``extra_names`` classes must be ignored by the sampler."""
    rng = random.Random(gen_seed)
    images = [image(i + 1, rng.randint(150, 400), rng.randint(150, 400)) for i in range(n_images)]
    anns: list[dict] = []
    ann_ids = rng.sample(range(1, 100_000), 2000)

    def box(img: dict, valid: bool) -> list[float]:
        if valid:
            w, h = rng.randint(32, img["width"] - 60), rng.randint(32, img["height"] - 60)
            return [rng.randint(10, img["width"] - 10 - w), rng.randint(10, img["height"] - 10 - h), w, h]
        return [rng.randint(0, 60), rng.randint(0, 60), rng.randint(5, 140), rng.randint(5, 140)]

    for name in (*names, *extra_names):
        cid = COCO_ID[name]
        for img in rng.sample(images, 4):
            anns.append(ann(ann_ids.pop(), img["id"], cid, box(img, True)))
        for _ in range(rng.randint(0, 12)):
            img = rng.choice(images)
            anns.append(ann(ann_ids.pop(), img["id"], cid, box(img, rng.random() < 0.5), rng.random() < 0.1))
    rng.shuffle(anns)
    cats = [{"id": COCO_ID[n], "name": n, "supercategory": "x"} for n in (*names, *extra_names)]
    rng.shuffle(cats)
    return {"images": images, "annotations": anns, "categories": cats}


def straightforward_sampling(data: dict, class_names, n_shot: int, seed: int) -> OrderedDict:
    """The documented algorithm, written plainly with the global ``random`` module."""
    random.seed(seed)
    cat_ids = [c["id"] for c in data["categories"] if c["name"] in class_names]
    anns = {a["id"]: a for a in data["annotations"]}
    imgs = {i["id"]: i for i in data["images"]}
    per_cat: dict[int, list] = {}
    for a in data["annotations"]:
        if a["category_id"] in cat_ids:
            per_cat.setdefault(a["category_id"], []).append((a["image_id"], a["id"]))
    out: OrderedDict = OrderedDict()
    for cat_id, pairs in per_cat.items():
        random.shuffle(pairs)
        out[cat_id] = []
        used: list = []
        for img_id, ann_id in pairs:
            a, im = anns[ann_id], imgs[img_id]
            x, y, w, h = a["bbox"]
            bad = (
                a.get("iscrowd", 0) == 1
                or w < 32
                or h < 32
                or x < 10
                or y < 10
                or im["width"] - (x + w) < 10
                or im["height"] - (y + h) < 10
            )
            if bad or img_id in used:
                continue
            used.append(img_id)
            out[cat_id].append({"img_id": img_id, "ann_ids": [ann_id]})
            if len(out[cat_id]) >= n_shot:
                break
        assert len(out[cat_id]) == n_shot
    return out


FEW_SHOT = METAINFO["few_shot_classes"]


@pytest.fixture(scope="module")
def few_shot_json(tmp_path_factory) -> tuple[Path, dict]:
    data = random_coco(7, FEW_SHOT)
    return write_json(tmp_path_factory.mktemp("fs") / "train.json", data), data


# ----------------------------------------------------------------------------------------------
# few_shot_sampling: seed-exactness


@pytest.mark.parametrize("seed", [0, 1, 33, 42, 2024])
@pytest.mark.parametrize("n_shot", [1, 3])
def test_sampling_matches_documented_algorithm(few_shot_json, seed, n_shot):
    path, data = few_shot_json
    got, _ = sample_few_shot(path, "few_shot_classes", n_shot, seed, log=lambda s: None)
    expected = straightforward_sampling(data, FEW_SHOT, n_shot, seed)
    assert got == expected
    assert list(got.items()) == list(expected.items())  # key order included


def test_key_order_is_first_annotation_order(few_shot_json):
    path, data = few_shot_json
    got, _ = sample_few_shot(path, "few_shot_classes", 2, 42, log=lambda s: None)
    split_ids = {COCO_ID[n] for n in FEW_SHOT}
    first_seen: list[int] = []
    for a in data["annotations"]:
        if a["category_id"] in split_ids and a["category_id"] not in first_seen:
            first_seen.append(a["category_id"])
    assert list(got) == first_seen
    assert list(got) != sorted(got)  # the fixture makes the two orders differ
    assert set(got) == split_ids  # classes outside the split (truck, elephant) are ignored


def tiny_one_class() -> dict:
    """One class (dog, 18), 6 images of 200x200, annotations in json order:
    101 img1 valid | 102 img2 crowd | 103 img3 valid | 104 img3 valid (same image)
    105 img4 at the left border | 106 img5 valid | 107 img6 too small."""
    good = [50, 50, 60, 60]
    anns = [
        ann(101, 1, 18, good),
        ann(102, 2, 18, good, iscrowd=1),
        ann(103, 3, 18, good),
        ann(104, 3, 18, [100, 100, 40, 40]),
        ann(105, 4, 18, [2, 50, 60, 60]),
        ann(106, 5, 18, good),
        ann(107, 6, 18, [50, 50, 20, 60]),
    ]
    return {
        "images": [image(i) for i in range(1, 7)],
        "annotations": anns,
        "categories": [{"id": 18, "name": "dog"}],
    }


@pytest.mark.parametrize(
    "seed, n_shot, expected",
    [
        # random.seed(0); shuffle -> 105 103 102 101 106 104 107: skip 105 (border), take 103,
        # skip 102 (crowd), take 101.
        (0, 2, [(3, 103), (1, 101)]),
        # random.seed(1); shuffle -> 104 107 103 101 105 102 ...: take 104, skip 107 (small),
        # take 106, skip 103 (image 3 already used), take 101.
        (1, 2, [(3, 104), (5, 106)]),
        (1, 3, [(3, 104), (5, 106), (1, 101)]),
        # random.seed(42); shuffle -> 102 104 105 103 107 101 106.
        (42, 3, [(3, 104), (1, 101), (5, 106)]),
    ],
)
def test_hand_computed_shuffle_then_walk(seed, n_shot, expected):
    pairs = [(1, 101), (2, 102), (3, 103), (3, 104), (4, 105), (5, 106), (6, 107)]
    random.seed(seed)
    random.shuffle(pairs)
    # The comments above hold for this Python: the literal expectations are not stale.
    assert [p[1] for p in pairs][:2] == {0: [105, 103], 1: [104, 107], 42: [102, 104]}[seed]
    refs = sample_references(tiny_one_class(), [18], n_shot, seed, log=lambda s: None)
    assert list(refs) == [18]
    assert refs[18] == [{"img_id": i, "ann_ids": [a]} for i, a in expected]


# ----------------------------------------------------------------------------------------------
# few_shot_sampling: validity, one per image, errors, LVIS padding


def test_validity_rule_boundaries():
    ok = {"bbox": [10, 10, 32, 32], "iscrowd": 0}
    assert is_valid_annotation(ok, 52, 52)  # exactly 10 px from every border, exactly 32 px
    assert not is_valid_annotation(ok, 51.9, 52)
    assert not is_valid_annotation(ok, 52, 51.9)
    assert not is_valid_annotation({"bbox": [9.9, 10, 32, 32]}, 100, 100)
    assert not is_valid_annotation({"bbox": [10, 9.9, 32, 32]}, 100, 100)
    assert not is_valid_annotation({"bbox": [10, 10, 31.9, 32]}, 100, 100)
    assert not is_valid_annotation({"bbox": [10, 10, 32, 31.9]}, 100, 100)
    assert not is_valid_annotation({"bbox": [20, 20, 40, 40], "iscrowd": 1}, 100, 100)
    assert is_valid_annotation({"bbox": [20, 20, 40, 40]}, 100, 100)  # LVIS: no iscrowd key


def border_json() -> tuple[dict, set[int]]:
    """One class; 5 valid instances on 5 images and 7 invalid kinds on every image."""
    images = [image(i, 300, 200) for i in range(1, 6)]
    anns, valid_ids, next_id = [], set(), 1
    invalid_boxes = [
        ([0, 50, 80, 80], 0),  # touches the left border
        ([50, 5, 80, 80], 0),  # top
        ([215, 50, 80, 80], 0),  # right: 300 - 295 = 5
        ([50, 115, 80, 80], 0),  # bottom: 200 - 195 = 5
        ([50, 50, 31, 80], 0),  # too narrow
        ([50, 50, 80, 31], 0),  # too low
        ([60, 60, 90, 90], 1),  # crowd
    ]
    for img in images:
        for bbox, crowd in invalid_boxes:
            anns.append(ann(next_id, img["id"], 1, bbox, iscrowd=crowd))
            next_id += 1
        anns.append(ann(next_id, img["id"], 1, [100, 60, 60, 60]))
        valid_ids.add(next_id)
        next_id += 1
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}, valid_ids


@pytest.mark.parametrize("seed", range(8))
def test_invalid_annotations_never_chosen(seed):
    data, valid_ids = border_json()
    refs = sample_references(data, [1], 5, seed, log=lambda s: None)
    assert {e["ann_ids"][0] for e in refs[1]} == valid_ids
    with pytest.raises(DatasetError, match="1 class.*'person' \\(id 1\\): 5 found.*--n-shot 5 or fewer"):
        sample_references(data, [1], 6, seed, log=lambda s: None)


@pytest.mark.parametrize("seed", range(8))
def test_one_entry_per_image_per_class(seed):
    # 3 images, each with 4 valid dogs: K=3 must use the 3 images once each; K=4 is too many.
    anns = [ann(10 * i + j, i, 18, [20 + 40 * j, 20, 35, 35]) for i in (1, 2, 3) for j in range(4)]
    data = {
        "images": [image(i) for i in (1, 2, 3)],
        "annotations": anns,
        "categories": [{"id": 18, "name": "dog"}],
    }
    refs = sample_references(data, [18], 3, seed, log=lambda s: None)
    assert sorted(e["img_id"] for e in refs[18]) == [1, 2, 3]
    with pytest.raises(DatasetError, match="'dog' \\(id 18\\): 3 found"):
        sample_references(data, [18], 4, seed, log=lambda s: None)


def test_class_without_annotations_is_an_error_outside_lvis():
    data = tiny_one_class()
    data["categories"].append({"id": 17, "name": "cat"})
    with pytest.raises(DatasetError, match="no annotation at all: 'cat' \\(id 17\\)"):
        sample_references(data, [17, 18], 1, 0, log=lambda s: None)


def lvis_json() -> dict:
    cats = [
        {"id": 1, "name": "aerosol_can", "frequency": "r"},  # 1 valid instance
        {"id": 2, "name": "alarm_clock", "frequency": "r"},  # 2 valid instances
        {"id": 3, "name": "apron", "frequency": "r"},  # only invalid instances (2 images)
        {"id": 4, "name": "armband", "frequency": "r"},  # no annotation at all
        {"id": 5, "name": "banana", "frequency": "f"},  # not in lvis_rare
    ]
    good = [40, 40, 50, 50]
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": good},
        {"id": 21, "image_id": 1, "category_id": 2, "bbox": good},
        {"id": 22, "image_id": 2, "category_id": 2, "bbox": good},
        {"id": 31, "image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 50]},
        {"id": 32, "image_id": 2, "category_id": 3, "bbox": [40, 40, 10, 10]},
        {"id": 51, "image_id": 2, "category_id": 5, "bbox": good},
    ]
    imgs = [
        {"id": i, "coco_url": f"http://x/train2017/{i:012d}.jpg", "width": 160, "height": 160} for i in (1, 2)
    ]
    return {"images": imgs, "annotations": anns, "categories": cats}


def test_lvis_pads_by_cycling_with_notice(tmp_path):
    path = write_json(tmp_path / "lvis_v1_train.json", lvis_json())
    logs: list[str] = []
    refs, _ = sample_few_shot(path, "lvis_rare", 3, seed=5, log=logs.append)
    assert list(refs) == [1, 2, 3]
    assert [e["ann_ids"][0] for e in refs[1]] == [11, 11, 11]
    two = [e["ann_ids"][0] for e in refs[2]]
    assert sorted(two[:2]) == [21, 22] and two[2] == two[0]  # cycled: a, b, a
    three = [e["ann_ids"][0] for e in refs[3]]
    assert sorted(three[:2]) == [31, 32] and three[2] == three[0]  # invalid fallback, cycled
    assert all(len(v) == 3 for v in refs.values())
    text = "\n".join(logs)
    assert "3 class(es) have fewer than 3 usable instances and were padded" in text
    assert "'apron' (id 3): 2 invalid only" in text
    assert "'armband' (id 4)" in text and "no annotation" in text
    assert refs[1][0] is not refs[1][1]  # padded copies are separate objects


# ----------------------------------------------------------------------------------------------
# few_shot_sampling: command line


def test_cli_writes_seed_exact_pickle(few_shot_json, tmp_path, capsys):
    path, data = few_shot_json
    out = tmp_path / "refs" / "fs_2shot_33seed.pkl"
    rc = few_shot_sampling.main(
        [
            "--n-shot",
            "2",
            "--out-path",
            str(out),
            "--seed",
            "33",
            "--dataset",
            "few_shot_classes",
            "--json",
            str(path),
        ]
    )
    assert rc == 0
    refs = load_reference_pkl(out)
    expected = straightforward_sampling(data, FEW_SHOT, 2, 33)
    assert list(refs.items()) == list(expected.items())
    with open(out, "rb") as f:
        assert isinstance(pickle.load(f), OrderedDict)
    assert "for each of 20 classes of few_shot_classes (seed 33)" in capsys.readouterr().out


def test_cli_errors(few_shot_json, tmp_path, monkeypatch, capsys):
    path, _ = few_shot_json
    out = str(tmp_path / "r.pkl")
    # Split names missing from the json (the fixture has only 22 of the 80 COCO classes).
    assert few_shot_sampling.main(["--n-shot", "1", "--out-path", out, "--json", str(path)]) == 1
    err = capsys.readouterr().err
    assert "58 class(es) of --dataset coco are not in the json's categories" in err and "'truck'" not in err
    # Default json path, relative to the working directory.
    monkeypatch.chdir(tmp_path)
    assert (
        few_shot_sampling.main(["--n-shot", "1", "--out-path", out, "--dataset", "pascal_voc_split_1"]) == 1
    )
    assert "./data/pascal_voc/annotations/voc0712_trainval_with_segm.json" in capsys.readouterr().err
    # Too many shots: named class, count, advice.
    assert (
        few_shot_sampling.main(
            ["--n-shot", "50", "--out-path", out, "--dataset", "few_shot_classes", "--json", str(path)]
        )
        == 1
    )
    assert "Use --n-shot" in capsys.readouterr().err
    assert not os.path.exists(out)
    for bad in (["--dataset", "cocoo"], ["--plot"], ["--n-shot", "0"]):
        argv = ["--n-shot", "1", "--out-path", out, *bad]
        with pytest.raises(SystemExit) as exc:
            few_shot_sampling.main(argv)
        assert exc.value.code == 2
    assert "unknown --dataset 'cocoo'" in capsys.readouterr().err


def test_script_runs_from_repo_root(few_shot_json, tmp_path):
    path, data = few_shot_json
    out = tmp_path / "script.pkl"
    cmd = [
        sys.executable,
        "no_time_to_train/dataset/few_shot_sampling.py",
        "--n-shot",
        "1",
        "--out-path",
        str(out),
    ]
    cmd += ["--seed", "3", "--dataset", "few_shot_classes", "--json", str(path)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert list(load_reference_pkl(out).items()) == list(
        straightforward_sampling(data, FEW_SHOT, 1, 3).items()
    )


def test_plot_writes_overlays(tmp_path):
    # Two dogs and one cat per image on a plain grey background.
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    images, anns = [], []
    for i in (1, 2):
        images.append(image(i, 240, 180))
        cv2.imwrite(str(img_dir / f"{i:06d}.png"), np.full((180, 240, 3), 128, np.uint8))
        anns.append(ann(10 * i, i, 18, [20, 30, 60, 50]))
        anns.append(ann(10 * i + 1, i, 18, [100, 30, 50, 50]))
        anns.append(ann(10 * i + 2, i, 17, [20, 110, 60, 50]))
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
    }
    refs = sample_references(data, [17, 18], 2, seed=0, log=lambda s: None)
    n = few_shot_sampling.plot_references(refs, data, str(img_dir), tmp_path / "refs_viz")
    assert n == 8
    anns_by_id = {a["id"]: a for a in anns}
    for cat_id, entries in refs.items():
        for v, entry in enumerate(entries):
            stem = tmp_path / "refs_viz" / f"{cat_id}_v{v}_{entry['img_id']}"
            mask_png = cv2.imread(f"{stem}_mask.png")
            all_png = cv2.imread(f"{stem}_all_anns.png")
            assert mask_png.shape == all_png.shape == (180, 240, 3)
            x, y, w, h = anns_by_id[entry["ann_ids"][0]]["bbox"]
            inside = (slice(y + 5, y + h - 5), slice(x + 5, x + w - 5))
            assert (np.abs(mask_png[inside].astype(int) - 128).sum(-1) > 30).all()
            assert (mask_png[170:, 200:] == 128).all()  # far from every box: untouched
            for a in anns:  # every annotation of the image is painted in the all-anns view
                if a["image_id"] == entry["img_id"]:
                    ax, ay, aw, ah = a["bbox"]
                    region = all_png[ay + 5 : ay + ah - 5, ax + 5 : ax + aw - 5].astype(int)
                    assert (np.abs(region - 128).sum(-1) > 30).all()


def test_cli_plot_folder_and_missing_image(tmp_path, capsys):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    data = tiny_one_class()  # its dogs become horses
    voc_ids = {name: i + 1 for i, name in enumerate(METAINFO["pascal_voc_split_2"])}
    data["categories"] = [{"id": i, "name": n} for n, i in voc_ids.items()]
    for a in data["annotations"]:
        a["category_id"] = voc_ids["horse"]
    for a_id, cat in ((201, "aeroplane"), (202, "sofa"), (203, "cow"), (204, "bottle")):
        data["annotations"].append(ann(a_id, 1, voc_ids[cat], [40, 40, 50, 50]))
    for img in data["images"]:
        cv2.imwrite(str(img_dir / img["file_name"]), np.zeros((200, 200, 3), np.uint8))
    path = write_json(tmp_path / "voc.json", data)
    out = tmp_path / "voc_1shot.pkl"
    argv = ["--n-shot", "1", "--out-path", str(out), "--dataset", "pascal_voc_split_2", "--json", str(path)]
    assert few_shot_sampling.main([*argv, "--plot", "--img-dir", str(img_dir)]) == 0
    viz = tmp_path / "voc_1shot_viz"
    assert len(list(viz.glob("*_mask.png"))) == len(list(viz.glob("*_all_anns.png"))) == 5
    os.remove(img_dir / "000001.png")
    assert few_shot_sampling.main([*argv, "--plot", "--img-dir", str(img_dir)]) == 1
    assert "Check --img-dir" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# coco_to_pkl


def custom_json() -> dict:
    """bird (16): 3 birds on image 1 (+ a crowd one on image 2); boat (9): 2 boats;
    dog (18): 10 instances, 4 of them invalid, 2 images hold 2 valid ones; cat (17): none."""
    anns = [
        ann(1, 1, 16, [20, 20, 40, 40]),
        ann(2, 1, 16, [80, 20, 40, 40]),
        ann(3, 1, 16, [20, 100, 40, 40]),
        ann(4, 2, 16, [20, 20, 40, 40], iscrowd=1),
        ann(5, 2, 9, [30, 30, 60, 60]),
        ann(6, 3, 9, [30, 30, 60, 60]),
    ]
    dog_boxes = [
        (3, [20, 20, 40, 40]),
        (3, [100, 100, 40, 40]),
        (4, [20, 20, 40, 40]),
        (4, [100, 100, 40, 40]),
        (5, [20, 20, 40, 40]),
        (6, [20, 20, 40, 40]),
        (7, [0, 20, 40, 40]),
        (8, [20, 20, 10, 40]),
        (9, [20, 20, 40, 40]),
        (10, [170, 20, 40, 40]),
    ]
    anns += [ann(100 + i, img, 18, b, iscrowd=int(img == 9)) for i, (img, b) in enumerate(dog_boxes)]
    cats = [{"id": c, "name": n} for c, n in ((18, "dog"), (16, "bird"), (17, "cat"), (9, "boat"))]
    return {"images": [image(i) for i in range(1, 11)], "annotations": anns, "categories": cats}


def test_coco_to_pkl_one_entry_per_annotation(tmp_path):
    path = write_json(tmp_path / "refs.json", custom_json())
    logs: list[str] = []
    refs = coco_to_pkl.coco_json_to_pkl(path, tmp_path / "refs.pkl", 4, log=logs.append)
    assert list(refs) == [9, 16, 18]  # ascending ids; cat (17) has no annotation
    assert [e["ann_ids"] for e in refs[16]] == [[1], [2], [3], [4]]  # every bird once, none repeated
    assert all(len(e["ann_ids"]) == 1 for v in refs.values() for e in v)
    assert any(
        "1 category(ies) have no annotation and are left out of the pickle: 'cat' (id 17)" in s for s in logs
    )
    loaded = load_reference_pkl(tmp_path / "refs.pkl")
    assert list(loaded.items()) == list(refs.items())


@pytest.mark.parametrize("target", [1, 3, 5, 7])
def test_coco_to_pkl_exact_count_and_loads(tmp_path, target):
    path = write_json(tmp_path / "refs.json", custom_json())
    out = tmp_path / "refs.pkl"
    assert coco_to_pkl.main([str(path), str(out), str(target)]) == 0
    loaded = load_reference_pkl(out)
    assert list(loaded) == [9, 16, 18]
    assert all(len(v) == target for v in loaded.values())


def test_coco_to_pkl_padding_is_seeded(tmp_path):
    data = custom_json()
    runs = {
        seed: coco_to_pkl.coco_to_references(data, 6, seed=seed, log=lambda s: None) for seed in range(12)
    }
    for seed, refs in runs.items():
        boats = [e["ann_ids"][0] for e in refs[9]]
        assert boats[:2] == [5, 6] and set(boats) == {5, 6} and len(boats) == 6
        assert refs == coco_to_pkl.coco_to_references(data, 6, seed=seed, log=lambda s: None)
    assert len({tuple(e["ann_ids"][0] for e in r[9]) for r in runs.values()}) > 1  # the seed matters


def test_coco_to_pkl_sampling_prefers_valid_and_distinct_images(tmp_path):
    data = custom_json()
    valid_dogs = {100, 101, 102, 103, 104, 105}  # on images 3, 3, 4, 4, 5, 6
    picks = set()
    for seed in range(12):
        logs: list[str] = []
        refs = coco_to_pkl.coco_to_references(data, 4, seed=seed, log=logs.append)
        dogs = [e["ann_ids"][0] for e in refs[18]]
        assert set(dogs) <= valid_dogs
        assert sorted(e["img_id"] for e in refs[18]) == [3, 4, 5, 6]  # one per image first
        assert dogs == sorted(dogs)  # json order
        assert refs == coco_to_pkl.coco_to_references(data, 4, seed=seed, log=lambda s: None)
        assert any("'dog' (id 18): 10 annotations, sampled 4" in s for s in logs)
        picks.add(tuple(dogs))
        # 7 of 10: the 6 valid ones first, then one invalid.
        seven = coco_to_pkl.coco_to_references(data, 7, seed=seed, log=lambda s: None)[18]
        assert valid_dogs < {e["ann_ids"][0] for e in seven}
    assert len(picks) > 1


def test_coco_to_pkl_errors(tmp_path, capsys):
    out = str(tmp_path / "o.pkl")
    assert coco_to_pkl.main([str(tmp_path / "missing.json"), out, "1"]) == 1
    assert "Annotation file not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert coco_to_pkl.main([str(tmp_path / "bad.json"), out, "1"]) == 1
    assert "as json" in capsys.readouterr().err
    write_json(tmp_path / "list.json", {"images": []})
    assert coco_to_pkl.main([str(tmp_path / "list.json"), out, "1"]) == 1
    assert "not a COCO-format annotation file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        coco_to_pkl.main([str(tmp_path / "bad.json"), out, "0"])
    with pytest.raises(UserInputError):
        coco_to_pkl.coco_to_references(custom_json(), 0)
    assert not os.path.exists(out)


def test_coco_to_pkl_script_runs(tmp_path):
    path = write_json(tmp_path / "refs.json", custom_json())
    out = tmp_path / "refs.pkl"
    cmd = [sys.executable, "no_time_to_train/dataset/coco_to_pkl.py", str(path), str(out), "1", "--seed", "7"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 1 reference(s) for each of 3 categories" in proc.stdout
    assert all(len(v) == 1 for v in load_reference_pkl(out).values())
