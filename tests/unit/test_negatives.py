"""Negative references: the reference's score formula (known answers) and false-positive sampling."""

from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F

from no_time_to_train.data.coco import coco_from_dict
from no_time_to_train.models.matching import label_and_score_sims, negative_aware_similarity
from no_time_to_train.pipeline.negatives import false_positives, sample_negatives

E = torch.eye(4)


def test_score_formula_known_answers():
    f = torch.stack([E[0], F.normalize(E[0] + E[1], dim=0), E[2]])  # object, confuser, other class
    class_means = torch.stack([3 * E[0], 2 * E[2]])  # normalised inside: scale does not matter
    negs = torch.zeros(2, 2, 4)
    negs[0, 0] = 5 * (E[0] + E[1])  # a known false positive of class 0 (its direction)
    negs[0, 1] = E[0]  # an unfilled slot (count 1): must be ignored
    counts = torch.tensor([1, 0])
    s = negative_aware_similarity(f, class_means, negs, counts)
    # object: pos 1, neg cos(e0, (e0+e1)/sqrt2) = 0.7071 < pos -> no penalty
    assert s[0, 0].item() == pytest.approx(1.0)
    # confuser: pos = 1/sqrt2, neg = 1 -> pos * exp(-(1 - pos) / 0.8)
    pos = 1 / math.sqrt(2)
    assert s[1, 0].item() == pytest.approx(pos * math.exp(-(1 - pos) / 0.8), rel=1e-6)
    assert s[1, 0].item() == pytest.approx(0.49032, abs=1e-5)
    # a class without negatives scores its plain clamped cosine; negative cosines clamp to 0
    assert s[2, 1].item() == pytest.approx(1.0) and s[0, 1].item() == 0.0
    scores, labels = label_and_score_sims(s, f)
    assert labels.tolist() == [0, 0, 1] and scores[2].item() == pytest.approx(1.0)


def test_penalty_only_when_the_negative_is_closer_than_the_class():
    f = F.normalize(torch.tensor([[1.0, 0.5, 0, 0]]), dim=1)
    mean = torch.tensor([[1.0, 0, 0, 0]])
    pos = (f @ F.normalize(mean, dim=1).T).item()
    for neg_dir, penalised in (([1.0, 0.5, 0, 0], True), ([1.0, -0.5, 0, 0], False), ([0, 0, 1.0, 0], False)):
        negs = torch.tensor([[neg_dir]])
        s = negative_aware_similarity(f, mean, negs, torch.tensor([1])).item()
        assert (s < pos - 1e-6) == penalised and s <= pos + 1e-6


def _rle(h, w, box):
    m = np.zeros((h, w), np.uint8, order="F")
    x, y, bw, bh = box
    m[y : y + bh, x : x + bw] = 1
    r = mask_utils.encode(m)
    r["counts"] = r["counts"].decode()
    return r


def test_false_positive_sampling():
    coco = coco_from_dict({
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"},
                   {"id": 2, "width": 100, "height": 100, "file_name": "b.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "area": 400,
                         "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}],
        "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
    })  # fmt: skip
    res = [
        {"image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 20], "score": 0.9},  # TP
        {"image_id": 1, "category_id": 5, "bbox": [60, 60, 20, 20], "score": 0.8},  # FP: no overlap
        {"image_id": 1, "category_id": 5, "bbox": [25, 25, 20, 20], "score": 0.85},  # IoU 0.06 < 0.1: FP
        {"image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "score": 0.7},  # class absent: FP
        {"image_id": 2, "category_id": 5, "bbox": [0, 0, 10, 10], "score": 0.1},  # FP below the threshold
        {"image_id": 2, "category_id": 5, "bbox": [50, 0, 10, 10], "score": 0.8},  # ties 0.8: image 1 first
    ]
    for r in res:
        r["segmentation"] = _rle(100, 100, [int(v) for v in r["bbox"]])
    assert false_positives(coco, res, [5, 7]) == [1, 2, 3, 4, 5]
    refs, neg = sample_negatives(coco, res, [5, 7], length=2, score_thr=0.2)
    by_id = {a["id"]: a for a in neg["annotations"]}
    cat5 = [by_id[e["ann_ids"][0]] for e in refs[5]]
    assert [(a["image_id"], a["score"]) for a in cat5] == [(1, 0.85), (1, 0.8)]  # top 2 by score
    assert [by_id[e["ann_ids"][0]]["category_id"] for e in refs[7]] == [7]
    assert sorted(i["id"] for i in neg["images"]) == [1] and all(a["area"] == 400 for a in cat5)
    refs, _ = sample_negatives(coco, res, [5, 7], length=10, score_thr=0.2)
    assert len(refs[5]) == 3  # image 2's 0.8 joins; its 0.1 stays out (below negative_score_thr)
