"""The synthetic COCO-format generator: determinism, COCO validity, mask/box consistency, references."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.data.splits import COCO_CATEGORIES
from no_time_to_train.data.synthetic import generate_coco_dataset, is_valid_reference, main
from no_time_to_train.errors import DatasetError

CLASSES = ("person", "car", "bird", "dog")
# pycocotools' decode warns under numpy 2 about a copy keyword; harmless, and not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def png_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_png")
    info = generate_coco_dataset(out, n_train=6, n_val=6, class_names=CLASSES, image_format="png", seed=3)
    return info


def _load(path: str) -> COCO:
    coco = COCO()
    with open(path) as f:
        coco.dataset = json.load(f)
    coco.createIndex()
    return coco


def test_layout_and_return_value(png_dataset):
    out = Path(png_dataset["out_dir"])
    assert png_dataset["train_json"] == str(out / "annotations" / "instances_train2017.json")
    assert png_dataset["val_json"] == str(out / "annotations" / "instances_val2017.json")
    assert png_dataset["train_img_dir"] == str(out / "train2017")
    assert png_dataset["reference_pkl"] == str(out / "annotations" / "references_2shot.pkl")
    assert png_dataset["category_ids"] == [1, 3, 16, 18]
    assert png_dataset["class_names"] == ["person", "car", "bird", "dog"]
    for split, folder in (("train", "train_img_dir"), ("val", "val_img_dir")):
        coco = _load(png_dataset[f"{split}_json"])
        assert len(coco.imgs) == png_dataset["num_images"][split] == 6
        for img in coco.imgs.values():
            assert (Path(png_dataset[folder]) / img["file_name"]).is_file()


def test_categories_are_the_real_coco_ones(png_dataset):
    data = json.loads(Path(png_dataset["val_json"]).read_text())
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(COCO_CATEGORIES)
    sup = {c["name"]: c["supercategory"] for c in data["categories"]}
    assert (sup["person"], sup["car"], sup["dog"], sup["tv"], sup["toilet"]) == (
        "person", "vehicle", "animal", "electronic", "furniture",
    )  # fmt: skip
    used = {a["category_id"] for a in data["annotations"]}
    assert used <= set(png_dataset["category_ids"])


def test_masks_boxes_areas_and_pixels_agree(png_dataset):
    ids = set()
    colors = png_dataset["class_colors"]
    for split, folder in (("train", "train_img_dir"), ("val", "val_img_dir")):
        coco = _load(png_dataset[f"{split}_json"])
        for img_id, img in coco.imgs.items():
            pixels = cv2.imread(str(Path(png_dataset[folder]) / img["file_name"]))[..., ::-1].astype(int)
            assert pixels.shape[:2] == (img["height"], img["width"])
            for ann in coco.imgToAnns[img_id]:
                assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"], list)
                mask = coco.annToMask(ann).astype(bool)
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert ann["area"] == mask.sum()
                # the painted object is exactly the annotated mask, in its class colour
                diff = np.abs(pixels - np.array(colors[ann["category_id"]])).max(-1)
                assert np.median(diff[mask]) < 12
                ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
                assert (diff[ring] < 30).mean() < 0.05
                ids.add(ann["id"])
    n_anns = sum(png_dataset["num_annotations"].values())
    assert ids == set(range(1, n_anns + 1))


def test_polygon_and_rle_encode_the_same_pixels(tmp_path):
    kwargs = dict(n_train=4, n_val=4, seed=5, image_format="png")
    poly = generate_coco_dataset(tmp_path / "p", segm_format="polygon", **kwargs)
    rle = generate_coco_dataset(tmp_path / "r", segm_format="rle", **kwargs)
    a, b = _load(poly["val_json"]), _load(rle["val_json"])
    assert len(a.anns) > 3
    for ann_a, ann_b in zip(a.anns.values(), b.anns.values(), strict=True):
        assert isinstance(ann_a["segmentation"], list) and all(len(p) >= 6 for p in ann_a["segmentation"])
        assert isinstance(ann_b["segmentation"]["counts"], str)
        assert np.array_equal(a.annToMask(ann_a), b.annToMask(ann_b))
        assert ann_a["bbox"] == ann_b["bbox"] and ann_a["area"] == ann_b["area"]
    for img in a.imgs.values():
        pa, pb = (Path(d["val_img_dir"], img["file_name"]).read_bytes() for d in (poly, rle))
        assert pa == pb


def test_several_instances_and_empty_images(png_dataset):
    coco = _load(png_dataset["val_json"])
    counts = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert max(counts) > 1 and min(counts) == 0
    assert all(n <= 4 for n in counts)
    boxes = [a["bbox"] for a in coco.anns.values()]
    assert np.median([min(b[2], b[3]) for b in boxes]) > 32


def test_reference_pickle(png_dataset):
    refs = load_reference_pkl(png_dataset["reference_pkl"])
    coco = _load(png_dataset["train_json"])
    assert list(refs) == png_dataset["category_ids"]
    for cat_id, entries in refs.items():
        assert len(entries) == 2
        assert len({e["img_id"] for e in entries}) == 2
        for e in entries:
            ann = coco.anns[e["ann_ids"][0]]
            img = coco.imgs[e["img_id"]]
            assert ann["category_id"] == cat_id and ann["image_id"] == e["img_id"]
            assert is_valid_reference(ann["bbox"], img["width"], img["height"])


def test_deterministic_by_seed(tmp_path):
    def files(out):
        ann = out / "annotations"
        names = ("instances_train2017.json", "instances_val2017.json", "references_2shot.pkl")
        return [(ann / n).read_bytes() for n in names] + [p.read_bytes() for p in sorted(out.glob("*/*.png"))]

    kwargs = dict(n_train=4, n_val=3, class_names=CLASSES, image_format="png")
    generate_coco_dataset(tmp_path / "a", seed=7, **kwargs)
    generate_coco_dataset(tmp_path / "b", seed=7, **kwargs)
    generate_coco_dataset(tmp_path / "c", seed=8, **kwargs)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    a, c = files(tmp_path / "a"), files(tmp_path / "c")
    assert a[0] != c[0] and a[1] != c[1] and a[3:] != c[3:]


def test_enough_references_for_many_shots(tmp_path):
    info = generate_coco_dataset(tmp_path, n_train=10, n_val=0, class_names=CLASSES, n_shot=5, seed=1)
    refs = load_reference_pkl(info["reference_pkl"])
    assert all(len({e["img_id"] for e in v}) == 5 for v in refs.values())
    with pytest.raises(ValueError, match="n_train"):
        generate_coco_dataset(tmp_path / "x", n_train=3, class_names=CLASSES, n_shot=5)


def test_bad_arguments_and_foreign_json(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        generate_coco_dataset(tmp_path, class_names=("person", "unicorn"))
    real = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    real.parent.mkdir(parents=True)
    real.write_text(json.dumps({"info": {"description": "COCO 2017 Dataset"}, "images": []}))
    with pytest.raises(DatasetError, match="refusing"):
        generate_coco_dataset(tmp_path / "coco")
    assert "COCO 2017" in real.read_text()


def test_custom_layout(tmp_path):
    info = generate_coco_dataset(
        tmp_path, n_train=4, n_val=2, class_names=("boat", "bird"), n_shot=1, layout="custom"
    )
    assert info["train_json"].endswith("custom_references.json")
    assert info["val_json"].endswith("custom_targets.json")
    assert info["train_img_dir"] == info["val_img_dir"] == str(tmp_path / "images")
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 6


def test_cli(tmp_path, capsys):
    out = tmp_path / "data" / "coco"
    main(["--out-dir", str(out), "--n-train", "3", "--n-val", "2", "--classes", "cat,tv", "--n-shot", "1",
          "--min-size", "200", "--max-size", "240", "--seed", "4"])  # fmt: skip
    assert "Synthetic COCO dataset" in capsys.readouterr().out
    coco = _load(str(out / "annotations" / "instances_val2017.json"))
    assert all(200 <= i["width"] <= 240 and 200 <= i["height"] <= 240 for i in coco.imgs.values())
    assert len(list((out / "train2017").glob("*.jpg"))) == 3
    assert list(load_reference_pkl(out / "annotations" / "references_1shot.pkl")) == [17, 72]


def test_cli_large_images_and_errors(tmp_path, capsys):
    out = tmp_path / "bench"
    info = main(["--out-dir", str(out), "--large", "--n-train", "1", "--n-val", "1", "--classes", "cat",
                 "--n-shot", "1", "--empty-fraction", "0"])  # fmt: skip
    coco = _load(info["val_json"])
    assert all(960 <= i["width"] <= 1024 and 960 <= i["height"] <= 1024 for i in coco.imgs.values())
    with pytest.raises(SystemExit):
        main(["--out-dir", str(out), "--classes", "cat,unicorn"])
    assert "unicorn" in capsys.readouterr().err
