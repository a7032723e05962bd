"""``coco_inst_to_segm.py``: COCO-20i mIoU on a hand-made case with a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from no_time_to_train.data.synthetic import coco_categories
from no_time_to_train.evaluation import semantic_miou

from .common import decode

# ----------------------------------------------------------------------------------------------
# coco_inst_to_segm: mIoU with a known answer


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


def rows(r0: int, r1: int, c0: int = 0, c1: int = 10) -> np.ndarray:
    m = np.zeros((10, 10), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_semantic_miou_known_answer(tmp_path, capsys):
    # COCO-20i fold 1 holds person (id 1) and airplane (id 5), not bicycle (id 2).
    cats = coco_categories()  # all 80, as in instances_val2017.json
    images = [
        {"id": 1, "height": 10, "width": 10, "file_name": "a"},
        {"id": 2, "height": 10, "width": 10, "file_name": "b"},
    ]
    gt_anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(rows(0, 5)), "iscrowd": 0},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 5,
            "segmentation": [[0, 5, 5, 5, 5, 10, 0, 10]],
            "iscrowd": 0,
        },
        {"id": 3, "image_id": 1, "category_id": 2, "segmentation": rle(rows(5, 10, 5, 10)), "iscrowd": 0},
    ]
    assert (decode(gt_anns[1]["segmentation"], 10, 10) == rows(5, 10, 0, 5)).all()  # the polygon's pixels
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": gt_anns, "categories": cats}))
    dets = [
        {"image_id": 1, "category_id": 5, "score": 0.6, "segmentation": rle(rows(5, 10))},
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": rle(rows(0, 5))},
        {"image_id": 1, "category_id": 5, "score": 0.95, "segmentation": rle(rows(0, 2))},  # wins over person
        {"image_id": 1, "category_id": 1, "score": 0.4, "segmentation": rle(rows(0, 10))},  # below 0.5
        {"image_id": 1, "category_id": 2, "score": 0.99, "segmentation": rle(rows(0, 10))},  # not in the fold
        {"image_id": 2, "category_id": 1, "score": 0.7, "segmentation": rle(rows(0, 1))},  # false positive
    ]
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(dets))

    s = semantic_miou.evaluate_semantic(res_path, gt, split=1)
    # person: I = 30 (rows 2-4), U = 50 GT + 40 predicted - 30 = 60; airplane: I = 25, U = 25 + 70 - 25
    assert s["per_class_IoU"]["person"] == pytest.approx(0.5)
    assert s["per_class_IoU"]["airplane"] == pytest.approx(25 / 70)
    assert s["mIoU"] == pytest.approx((0.5 + 25 / 70) / 2)
    assert s["num_classes"] == 20 and s["num_classes_in_mean"] == 2 and "boat" in s["classes_without_pixels"]
    assert s["background_IoU"] == pytest.approx(90 / 125)  # bg: 25 + 100 GT px, 90 predicted, all shared
    assert s["FB_IoU"] == pytest.approx((75 / 110 + 90 / 125) / 2)

    # The same classes named explicitly (in another order) give the same numbers.
    s2 = semantic_miou.evaluate_semantic(res_path, gt, class_names=["airplane", "person"])
    assert s2["mIoU"] == pytest.approx(s["mIoU"])
    assert s2["per_class_IoU"] == {k: s["per_class_IoU"][k] for k in ("airplane", "person")}
    # A lower threshold lets the 0.4 person in first (lowest score, painted first, then overwritten).
    s3 = semantic_miou.evaluate_semantic(res_path, gt, split=1, score_thr=0.3)
    assert s3["per_class_IoU"]["person"] == pytest.approx(s["per_class_IoU"]["person"])

    out = tmp_path / "miou.json"
    assert (
        semantic_miou.main(["--results", str(res_path), "--gt", str(gt), "--split", "1", "--out", str(out)])
        == 0
    )
    assert "mIoU over 2 of 20 classes: 42.86" in capsys.readouterr().out
    assert json.loads(out.read_text())["mIoU"] == pytest.approx(s["mIoU"])
    assert semantic_miou.main(["--results", str(res_path), "--gt", str(gt), "--split", "7"]) == 1
    assert semantic_miou.main(["--results", str(res_path), "--gt", str(gt)]) == 1
