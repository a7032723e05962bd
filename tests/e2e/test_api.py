"""Python API: same code path as the CLI; with oracle networks it must find the true instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from no_time_to_train.api import FewShotSegmenter
from no_time_to_train.errors import UserInputError

from ..oracle import GREYS, ColorEncoder, ColorProposer


def _oracle_segmenter(synth, **kw) -> FewShotSegmenter:
    colors = [tuple(synth["class_colors"][c]) for c in synth["category_ids"]]
    distract = [tuple(c) for c in synth["distractor_colors"]]
    return FewShotSegmenter(
        list(synth["class_names"]),
        device="cpu",
        encoder=ColorEncoder(colors + distract + GREYS),
        proposer=ColorProposer(colors + distract),
        **kw,
    )


def _add_train_references(seg: FewShotSegmenter, synth, per_class: int = 2) -> None:
    coco = COCO(synth["train_json"])
    for name, cat_id in zip(synth["class_names"], synth["category_ids"], strict=True):
        anns = coco.loadAnns(coco.getAnnIds(catIds=[cat_id]))[:per_class]
        for ann in anns:
            img = coco.imgs[ann["image_id"]]
            path = f"{synth['train_img_dir']}/{img['file_name']}"
            seg.add_reference(path, name, masks=coco.annToMask(ann))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_api_finds_the_true_instances(synth, tmp_path):
    seg = _oracle_segmenter(synth)
    _add_train_references(seg, synth)
    coco = COCO(synth["val_json"])
    found, total = 0, 0
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        pred = seg.predict(f"{synth['val_img_dir']}/{info['file_name']}", score_thr=0.5)
        assert pred.masks.shape[1:] == (info["height"], info["width"])
        gts = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        total += len(gts)
        for ann in gts:
            gt = coco.annToMask(ann).astype(bool)
            name = coco.cats[ann["category_id"]]["name"]
            hits = [
                i for i in range(len(pred)) if pred.label_names[i] == name and _iou(pred.masks[i], gt) > 0.9
            ]
            found += bool(hits)
        # every prediction that is not a true instance ranks below every one that is
        gt_masks = [coco.annToMask(a).astype(bool) for a in gts]
        true = [any(_iou(pred.masks[i], g) > 0.9 for g in gt_masks) for i in range(len(pred))]
        tp = [s for s, t in zip(pred.scores, true, strict=True) if t]
        fp = [s for s, t in zip(pred.scores, true, strict=True) if not t]
        assert not tp or not fp or max(fp) < min(tp)
    assert total > 0 and found == total

    # save / load round trip gives the same predictions
    path = tmp_path / "api_memory.ckpt"
    seg.save_memory(str(path))
    other = _oracle_segmenter(synth)
    other.load_memory(str(path))
    first = coco.imgs[sorted(coco.getImgIds())[0]]["file_name"]
    a = seg.predict(f"{synth['val_img_dir']}/{first}")
    b = other.predict(f"{synth['val_img_dir']}/{first}")
    assert np.array_equal(a.masks, b.masks) and np.allclose(a.scores, b.scores)


def test_api_accepts_arrays_pil_and_grayscale(synth):
    from PIL import Image

    seg = _oracle_segmenter(synth)
    _add_train_references(seg, synth, per_class=1)
    coco = COCO(synth["val_json"])
    info = coco.imgs[sorted(coco.getImgIds())[0]]
    path = f"{synth['val_img_dir']}/{info['file_name']}"
    arr = np.asarray(Image.open(path).convert("RGB"))
    p1, p2 = seg.predict(path), seg.predict(arr)
    p3 = seg.predict(Image.open(path))
    p4 = seg.predict(arr.astype(np.float32) / 255.0)
    assert np.array_equal(p1.masks, p2.masks) and np.array_equal(p1.masks, p3.masks)
    assert np.array_equal(p1.masks, p4.masks)
    gray = seg.predict(arr.mean(axis=2).astype(np.uint8))  # a grayscale image must not crash
    assert gray.masks.shape[1:] == arr.shape[:2]


def test_api_errors(synth):
    seg = _oracle_segmenter(synth)
    with pytest.raises(UserInputError, match="No references"):
        seg.predict(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(UserInputError, match="Unknown class"):
        seg.add_reference(np.zeros((64, 64, 3), np.uint8), "zebra", masks=np.ones((64, 64)))
    with pytest.raises(UserInputError, match="empty"):
        seg.add_reference(np.zeros((64, 64, 3), np.uint8), "person", masks=np.zeros((64, 64)))
    with pytest.raises(UserInputError, match=r"\(H, W\)"):
        seg.add_reference(np.zeros((64, 64, 3), np.uint8), "person", masks=np.ones((32, 32)))
    seg.add_reference(np.zeros((64, 64, 3), np.uint8), "person", masks=np.pad(np.ones((40, 40)), 12))
    with pytest.raises(UserInputError, match="No reference for class"):
        seg.build_memory()


def test_api_real_networks_with_random_weights(tiny_ckpts, synth, tmp_path):
    """from_checkpoints builds SAM2-t + DINOv2-S through the real loaders; boxes become masks."""
    seg = FewShotSegmenter.from_checkpoints(
        ["person", "car", "bird"],
        sam2_cfg="sam2_hiera_t.yaml",
        sam2_ckpt=tiny_ckpts["sam2"],
        encoder="dinov2_small",
        encoder_ckpt=tiny_ckpts["dinov2"],
        device="cpu",
        points_per_side=2,
    )
    img = np.full((120, 160, 3), 128, np.uint8)
    masks = seg.boxes_to_masks(img, [[10, 10, 60, 70], [80, 20, 150, 100]])
    assert masks.shape == (2, 120, 160) and masks.dtype == bool
    for i, name in enumerate(["person", "car", "bird"]):
        m = np.zeros((120, 160), bool)
        m[10 + 20 * i : 60 + 20 * i, 20:90] = True
        seg.add_reference(img, name, masks=m)
    seg.add_reference(img, "car", boxes=[[80, 20, 150, 100]]) if masks[1].any() else None
    pred = seg.predict(img)
    assert pred.masks.shape[1:] == (120, 160)
    # A uniform image whose references are crops of it: every patch feature is the same, so a
    # proposal's pooled feature equals each prototype and scores a cosine of 1 (random weights or not).
    assert len(pred) >= 1 and np.all(pred.scores > 0.99), pred.scores
    seg.save_memory(str(tmp_path / "m.ckpt"))
    sd = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"]
    assert all(k.startswith("memory.") for k in sd)


def test_api_progress_and_cpu_note(tiny_ckpts, capsys, monkeypatch):
    """predict shows a bar over SAM2's prompts; on CPU above 16x16 prompts a note says once what
    points_per_side=16 buys; add_reference shows a bar for several instances."""
    import no_time_to_train.api as api

    monkeypatch.setattr(api, "_CPU_NOTE_SHOWN", False)
    seg = FewShotSegmenter.from_checkpoints(
        ["thing"], sam2_cfg="sam2_hiera_t.yaml", sam2_ckpt=tiny_ckpts["sam2"], encoder="dinov2_small",
        encoder_ckpt=tiny_ckpts["dinov2"], device="cpu", points_per_side=17, testing_point_bs=100,
    )  # fmt: skip
    img = np.full((64, 64, 3), 90, np.uint8)
    two = np.zeros((2, 64, 64), bool)
    two[0, 5:30, 5:30] = two[1, 30:60, 30:60] = True
    seg.add_reference(img, "thing", masks=two)
    err = capsys.readouterr().err
    assert "add_reference: encoding" in err and "2/2" in err
    seg.predict(img)
    captured = capsys.readouterr()
    assert "points_per_side=16 is about 4x faster" in captured.out
    # 289 prompts in batches of 100: the bar reaches 289/289.
    assert "predict: SAM2 prompts" in captured.err and "289/289" in captured.err
    seg.predict(img, progress=False)
    captured = capsys.readouterr()
    assert "4x faster" not in captured.out and "SAM2 prompts" not in captured.err  # once; silent
