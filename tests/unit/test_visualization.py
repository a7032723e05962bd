"""Visualisation panels, per-image exports and per-class reports, on synthetic data with fake parts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.data.coco import coco_from_dict
from no_time_to_train.data.datasets import COCOMemoryFillCropDataset, COCORefTestDataset
from no_time_to_train.data.synthetic import generate_coco_dataset
from no_time_to_train.errors import ConfigError
from no_time_to_train.evaluation import reports
from no_time_to_train.evaluation.coco_eval import evaluate_coco
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.output.drawing import (
    BASE_PALETTE,
    band_line_height,
    class_color,
    class_colors,
    draw_instances,
    line_thickness,
    score_label,
    to_uint8_rgb,
)
from no_time_to_train.output.exports import export_prediction
from no_time_to_train.output.visualization import (
    gt_instances,
    load_original_image,
    prediction_path,
    visualize_memory_item,
    visualize_prediction,
)  # fmt: skip
from no_time_to_train.pipeline.segmenter import Detections, ReferenceSegmenter

CLASSES = ("person", "car", "bird", "dog")
FEAT_DIM = 16
# pycocotools' decode warns under numpy 2 about a copy keyword; harmless, and not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class ColourEncoder(nn.Module):
    """Fake patch encoder: mean colour of each 14 x 14 patch, mapped to D dims, plus a fixed
    per-position term (so that patches of one uniform object still project differently)."""

    def __init__(self, grid: int = 37, dim: int = FEAT_DIM):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.grid = grid
        self.proj = torch.randn(3, dim, generator=gen)
        self.pos = 0.3 * torch.randn(grid, grid, dim, generator=gen)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images.float(), self.grid).permute(0, 2, 3, 1)  # (B, g, g, 3)
        return pooled @ self.proj + self.pos


def read_rgb(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def memory_panel(item, memory, segmenter, results_dir) -> str:
    feats, weights = segmenter.encode_references(item["image"][None], item["mask"][None])
    return visualize_memory_item(item, feats[0], weights[0], memory, "synth", results_dir=results_dir)


def prediction_panel(ds, item, dets, vis_thr, results_dir, folder=None, names=None, dataset_name="synth"):
    image = load_original_image(folder or ds.root, item["file_name"], item["ori_size"])
    gt = gt_instances(ds, item["img_id"], image.shape[:2])
    out = prediction_path(dataset_name, item["file_name"], results_dir)
    return visualize_prediction(image, dets, names or list(ds.cat_names), gt, vis_thr, out)


def export(ds, file_name, dets, export_dir, fmt):
    return export_prediction(
        dets.masks.numpy(), dets.boxes.numpy(), dets.scores.tolist(), dets.labels.tolist(), file_name,
        ds.cat_names, ds.cat_ids, export_dir, fmt,
    )  # fmt: skip


def make_dets(masks: np.ndarray, scores, labels) -> Detections:
    m = torch.from_numpy(np.asarray(masks, bool))
    boxes = torch.zeros((len(m), 4))
    for i, mi in enumerate(m):
        ys, xs = torch.nonzero(mi, as_tuple=True)
        boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
    return Detections(
        masks=m,
        boxes=boxes,
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.long),
        embeddings=torch.zeros((len(m), FEAT_DIM)),
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_vis")
    return generate_coco_dataset(
        out, n_train=6, n_val=5, class_names=CLASSES, image_format="png", seed=5, min_size=220, max_size=300
    )


@pytest.fixture(scope="module")
def fill_dataset(synth):
    return COCOMemoryFillCropDataset(
        root=synth["train_img_dir"], json_file=synth["train_json"], memory_pkl=synth["reference_pkl"],
        image_size=518, memory_length=2, cat_names=list(CLASSES),
    )  # fmt: skip


@pytest.fixture(scope="module")
def memory_parts(fill_dataset):
    """A real MemoryBank filled with the fake encoder's features of the references, postprocessed."""
    memory = MemoryBank(len(CLASSES), 2, FEAT_DIM, kmeans_k=4, n_pca_components=3)
    segmenter = ReferenceSegmenter(memory, encoder=ColourEncoder())
    items = [fill_dataset[i] for i in range(len(fill_dataset))]
    feats, weights = [], []
    for it in items:
        f, w = segmenter.encode_references(it["image"][None], it["mask"][None])
        fg = w[0] > 0
        feats.append(f[0][fg])
        weights.append(w[0][fg])
    cls = torch.tensor([it["class_idx"] for it in items])
    slots = torch.tensor([it["slot"] for it in items])
    memory.fill_packed(cls, slots, feats, weights)
    memory.postprocess()
    return memory, segmenter, items


@pytest.fixture(scope="module")
def test_dataset(synth):
    return COCORefTestDataset(root=synth["val_img_dir"], json_file=synth["val_json"], cat_names=list(CLASSES))


# ---------------------------------------------------------------------------------------------- memory
def test_memory_panels(memory_parts, fill_dataset, tmp_path):
    memory, segmenter, items = memory_parts
    item = items[3]
    path = memory_panel(item, memory, segmenter, str(tmp_path))
    info = item["img_info"]
    assert (
        Path(path)
        == tmp_path / "memory_vis" / "synth" / f"{item['class_idx']}_{info['id']}_{info['ann_id']}.png"
    )
    img = read_rgb(path)
    s = 518
    assert img.shape == (s, 3 * s + 10, 3)
    crop = to_uint8_rgb(item["image"])
    gap1, km, gap2, pc = (
        img[:, s : s + 5],
        img[:, s + 5 : 2 * s + 5],
        img[:, 2 * s + 5 : 2 * s + 10],
        img[:, -s:],
    )
    assert (gap1 == 255).all() and (gap2 == 255).all()
    assert np.array_equal(img[:, :s], crop)

    # Independent expectation: which pixels are painted, and with which colour.
    feats, weights = segmenter.encode_references(item["image"][None], item["mask"][None])
    feats, weights = feats[0], weights[0]
    fg = (weights > 0).numpy()
    cell = (np.arange(s) // 14)[:, None] * 37 + (np.arange(s) // 14)[None, :]
    mask = item["mask"].numpy()
    painted = fg[cell] & (mask > 0.5)
    assert painted.sum() > 2000
    for panel in (km, pc):  # outside the painted area (in particular outside the mask): the crop
        assert np.array_equal(panel[~painted], crop[~painted])
    assert np.array_equal(km[mask <= 0.5], crop[mask <= 0.5])

    c = item["class_idx"]
    centres = memory.mem_feats_centers[c]
    assign = (F.normalize(feats, dim=-1) @ centres.T).argmax(1).numpy()
    palette = np.asarray(class_colors(4), np.uint8)
    assert len(palette) >= 4 and len({tuple(p) for p in BASE_PALETTE[:8]}) == 8
    assert np.array_equal(km[painted], palette[assign[cell[painted]]])

    proj = ((feats - memory.mem_pca_mean[c]) @ memory.mem_pca_components[c].T).double().numpy()
    lo, hi = proj[fg].min(0), proj[fg].max(0)
    expected = np.round((proj - lo) / (hi - lo) * 255)
    got = pc[painted].astype(int)
    assert np.abs(got - expected[cell[painted]]).max() <= 1
    # Patches with different projections get different colours: the visible patches with the
    # lowest and highest first component differ in red by the normalised projection gap.
    visible = np.unique(cell[painted])
    p_lo, p_hi = visible[proj[visible, 0].argmin()], visible[proj[visible, 0].argmax()]
    red = {}
    for p in (p_lo, p_hi):
        ys, xs = np.nonzero(painted & (cell == p))
        red[p] = int(pc[ys[0], xs[0], 0])
    gap = (proj[p_hi, 0] - proj[p_lo, 0]) / (hi[0] - lo[0]) * 255
    assert gap > 100 and abs(red[p_hi] - red[p_lo] - gap) <= 1
    assert len({tuple(v) for v in pc[painted]}) > 10


def test_memory_vis_needs_three_pca_components(fill_dataset, tmp_path):
    memory = MemoryBank(len(CLASSES), 2, FEAT_DIM, kmeans_k=4, n_pca_components=2)
    with pytest.raises(ConfigError, match="n_pca_components"):
        memory_panel(
            fill_dataset[0], memory, ReferenceSegmenter(memory, encoder=ColourEncoder()), str(tmp_path)
        )


# ---------------------------------------------------------------------------------------------- predictions
def _image_with_gt(ds: COCORefTestDataset) -> tuple[int, list[dict]]:
    for idx, img_id in enumerate(ds.img_ids):
        anns = [a for group in ds.gt_by_image(img_id).values() for a in group]
        if anns:
            return idx, anns
    raise AssertionError("no val image with GT")


def _free_square(occupied: np.ndarray, side: int, margin: int) -> tuple[int, int]:
    """Top-left of a ``side`` square whose ``margin`` surroundings do not touch ``occupied``."""
    h, w = occupied.shape
    for y in range(margin, h - side - margin, 4):
        for x in range(margin, w - side - margin, 4):
            if not occupied[y - margin : y + side + margin, x - margin : x + side + margin].any():
                return y, x
    raise AssertionError("no free square")


def _near_boxes(shape, boxes, margin: int) -> np.ndarray:
    near = np.zeros(shape, bool)
    for x1, y1, x2, y2 in boxes:
        near[
            max(0, int(y1) - margin) : int(y2) + margin + 1, max(0, int(x1) - margin) : int(x2) + margin + 1
        ] = True
    return near


def test_prediction_panels(test_dataset, synth, tmp_path):
    ds = test_dataset
    idx, anns = _image_with_gt(ds)
    item = ds[idx]
    orig = read_rgb(Path(synth["val_img_dir"]) / item["file_name"])
    h, w = orig.shape[:2]
    assert tuple(item["ori_size"]) == (h, w)
    gt_masks = np.stack([ds.coco.annToMask(a).astype(bool) for a in anns])
    ann = max(anns, key=lambda a: a["bbox"][1])  # the lowest object: room for its label above
    hit = ds.coco.annToMask(ann).astype(bool)
    label = ds.cat_ids.index(ann["category_id"])
    # A low-scoring detection on a free patch of background must not be drawn.
    y, x = _free_square(gt_masks.any(0), 24, 40)
    low = np.zeros((h, w), bool)
    low[y : y + 24, x : x + 24] = True
    dets = make_dets(np.stack([hit, low]), [0.9, 0.3], [label, (label + 1) % len(CLASSES)])
    path = prediction_panel(ds, item, dets, 0.5, str(tmp_path))
    assert Path(path) == tmp_path / "synth" / item["file_name"]
    picture = read_rgb(path)
    head = band_line_height(w)
    assert picture.shape[1] == 2 * w + 10 and picture.shape[0] >= head + h + head
    # Caption band above and legend band below: white paper with dark text on it.
    for band in (picture[:head], picture[head + h :]):
        assert (band == 255).mean() > 0.6 and (band.max(-1) < 100).any()
    img = picture[head : head + h]
    gt_panel, gap, pred = img[:, :w], img[:, w : w + 10], img[:, w + 10 :]
    assert (gap == 255).all()

    t = line_thickness(w)
    kernel = np.ones((2 * t + 3, 2 * t + 3), np.uint8)
    inner = cv2.erode(hit.astype(np.uint8), kernel).astype(bool)
    assert inner.sum() > 100
    color = np.asarray(class_color(label), np.float64)
    changed = (pred[inner] != orig[inner]).any(-1)
    assert changed.mean() > 0.99
    blend = np.round(orig[inner] * 0.6 + color * 0.4)
    assert (np.abs(pred[inner] - blend) <= 1).all(-1).mean() > 0.9  # the rest: under the label
    x1, y1 = int(dets.boxes[0, 0]), int(dets.boxes[0, 1])
    assert y1 > 30
    assert (pred[y1 - 1, x1 : x1 + 6] == class_color(label)).all()  # the label's filled rectangle
    # Below vis_thr: untouched (PNG, so exactly equal).
    assert np.array_equal(pred[low], orig[low])
    far = ~_near_boxes((h, w), dets.boxes[:1].numpy(), 45)
    assert np.array_equal(pred[far], orig[far])

    # GT panel: every GT object is drawn; far from all GT boxes it is the original image.
    for a in anns:
        gi = cv2.erode(ds.coco.annToMask(a), kernel).astype(bool)
        assert (gt_panel[gi] != orig[gi]).any(-1).mean() > 0.95
    gt_boxes = [
        (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in anns
    ]
    far_gt = ~_near_boxes((h, w), gt_boxes, 45)
    assert np.array_equal(gt_panel[far_gt], orig[far_gt])
    # GT objects without a prediction are not drawn in the prediction panel.
    for a in anns:
        if a["id"] != ann["id"]:
            gi = ds.coco.annToMask(a).astype(bool) & far
            assert np.array_equal(pred[gi], orig[gi])


def test_prediction_subfolder_imgs_path_and_no_detections(test_dataset, synth, tmp_path):
    """A custom dataset: file_name with a sub-folder, images read from model_cfg.test.imgs_path."""
    ds0 = test_dataset
    idx, anns = _image_with_gt(ds0)
    info = ds0.coco.imgs[ds0.img_ids[idx]]
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    shutil.copy(Path(synth["val_img_dir"]) / info["file_name"], imgs / "sub" / "a.png")
    data = {
        "images": [{**info, "file_name": "sub/a.png"}],
        "annotations": [a for a in ds0.coco.dataset["annotations"] if a["image_id"] == info["id"]],
        "categories": ds0.coco.dataset["categories"],
    }
    json_file = tmp_path / "custom_targets.json"
    json_file.write_text(json.dumps(data))
    ds = COCORefTestDataset(root=str(tmp_path / "missing"), json_file=str(json_file), cat_names=list(CLASSES))
    h, w = info["height"], info["width"]
    item = {"index": 0, "img_id": info["id"], "file_name": "sub/a.png", "ori_size": (h, w)}
    empty = Detections.empty((h, w), FEAT_DIM, torch.device("cpu"))
    path = prediction_panel(ds, item, empty, 0.5, str(tmp_path / "res"), folder=str(imgs),
                            names=["a", "b", "c", "d"], dataset_name="my_custom_dataset")  # fmt: skip
    assert Path(path) == tmp_path / "res" / "my_custom_dataset" / "sub" / "a.png"
    head = band_line_height(w)
    picture = read_rgb(path)
    img = picture[head : head + h]
    orig = read_rgb(imgs / "sub" / "a.png")
    assert picture.shape[1] == 2 * w + 10 and picture.shape[0] > head + h
    assert np.array_equal(img[:, w + 10 :], orig)
    assert not np.array_equal(img[:, :w], orig)


def _record_texts(monkeypatch) -> list[str]:
    """Every string the drawing module puts on a picture, in drawing order."""
    import no_time_to_train.output.drawing as drawing

    texts: list[str] = []
    real = drawing.cv2.putText

    def put_text(img, text, *args, **kwargs):
        texts.append(text)
        return real(img, text, *args, **kwargs)

    monkeypatch.setattr(drawing.cv2, "putText", put_text)
    return texts


def test_prediction_pictures_say_what_they_show(test_dataset, monkeypatch, tmp_path):
    ds = test_dataset
    idx, anns = _image_with_gt(ds)
    item = ds[idx]
    h, w = item["ori_size"]
    gt_classes = sorted({ds.cat_ids.index(a["category_id"]) for a in anns})
    other = next(c for c in range(len(CLASSES)) if c not in gt_classes)
    m = np.zeros((h, w), bool)
    m[5:40, 5:40] = True
    texts = _record_texts(monkeypatch)
    dets = make_dets(np.stack([m, m]), [0.537, 0.2], [other, gt_classes[0]])
    prediction_panel(ds, item, dets, 0.4, str(tmp_path))
    # Scores read as scores; only the detection above vis_thr is labelled; captions; legend of the
    # classes in either panel (ground truth and the drawn prediction), in class order.
    assert f"{CLASSES[other]} 0.53" in texts and f"{CLASSES[gt_classes[0]]} 0.20" not in texts
    assert "ground truth" in texts and "predictions > 0.40" in texts
    legend = texts[texts.index("predictions > 0.40") + 1 :]
    assert legend == [CLASSES[c] for c in sorted({*gt_classes, other})]

    texts.clear()
    prediction_panel(ds, item, make_dets(m[None], [0.3], [other]), 0.4, str(tmp_path))
    assert "no detections > 0.40" in texts and "predictions > 0.40" not in texts
    assert CLASSES[other] not in texts  # nothing drawn, so not in the legend either


def test_score_labels_never_round_up():
    assert score_label("bird", 0.537) == "bird 0.53"
    assert score_label("bird", 0.999) == "bird 0.99"
    assert score_label("bird", 0.5) == "bird 0.50"
    assert score_label("bird", 1.0) == "bird 1.00"


def test_palette_covers_lvis_sized_label_sets():
    colors = class_colors(1203)
    assert len(colors) == 1203 and colors == class_colors(1203)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)
    assert all(colors[i] != colors[i + 1] for i in range(1202))
    assert len(set(colors)) > 1000
    img = np.full((60, 80, 3), 100, np.uint8)
    m = np.zeros((1, 60, 80), bool)
    m[0, 20:40, 30:50] = True
    out = draw_instances(img, m, None, [1100], [0.77], [f"c{i}" for i in range(1203)])
    assert (out[30, 40] != img[30, 40]).any()
    assert np.array_equal(out[:, :10], img[:, :10])


# ---------------------------------------------------------------------------------------------- exports
def _blob_masks(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    a = (yy - 40) ** 2 + (xx - 50) ** 2 < 20**2
    b = (yy > 70) & (yy < 90) & (xx > 10) & (xx < 120)
    return np.stack([a, b])


@pytest.mark.parametrize("fmt", ["png", "rle"])
def test_exports_round_trip(test_dataset, tmp_path, fmt):
    ds = test_dataset
    masks = _blob_masks(100, 130)
    dets = make_dets(masks, [0.9, 0.4], [2, 0])  # bird, person
    exp = str(tmp_path / "exp")
    written = export(ds, "sub/000042.jpg", dets, exp, fmt)
    folder = tmp_path / "exp" / "sub" / "000042"
    index = folder / ("instances.json" if fmt == "png" else "000042.json")
    assert Path(written[-1]) == index
    data = json.loads(index.read_text())
    assert (data["image"], data["height"], data["width"]) == ("sub/000042.jpg", 100, 130)
    records = data["instances"]
    assert [r["category_id"] for r in records] == [16, 1]  # real COCO ids, not class indices
    assert [r["category_name"] for r in records] == ["bird", "person"]
    assert [r["score"] for r in records] == pytest.approx([0.9, 0.4])
    assert records[0]["bbox_xyxy"] == dets.boxes[0].tolist()
    for rec, m in zip(records, masks, strict=True):
        if fmt == "png":
            got = cv2.imread(str(folder / rec["file"]), cv2.IMREAD_UNCHANGED)
            assert got.dtype == np.uint8 and got.shape == m.shape
            assert np.array_equal(got, m.astype(np.uint8) * 255)
        else:
            assert isinstance(rec["segmentation"]["counts"], str)
            assert np.array_equal(mask_utils.decode(rec["segmentation"]).astype(bool), m)

    # Fewer detections next time: stale instance files go; no detections: an empty index.
    export(ds, "sub/000042.jpg", make_dets(masks[:1], [0.5], [1]), exp, fmt)
    assert len(json.loads(index.read_text())["instances"]) == 1
    if fmt == "png":
        assert sorted(p.name for p in folder.iterdir()) == ["inst_000.png", "instances.json"]
    empty = Detections.empty((100, 130), FEAT_DIM, torch.device("cpu"))
    assert export(ds, "000007.png", empty, exp, fmt) == [
        str(tmp_path / "exp" / "000007" / index.name.replace("000042", "000007"))
    ]
    empty_index = json.loads(
        Path(tmp_path / "exp" / "000007" / index.name.replace("000042", "000007")).read_text()
    )
    assert empty_index["instances"] == [] and empty_index["image"] == "000007.png"


# ---------------------------------------------------------------------------------------------- reports
def _rect_ann(ann_id, img_id, cat_id, x, y, w, h):
    poly = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": img_id, "category_id": cat_id, "bbox": [x, y, w, h],
            "area": w * h, "iscrowd": 0, "segmentation": [poly]}  # fmt: skip


def _result(coco, ann, score, dx=0):
    m = coco.annToMask(ann)
    m = np.roll(m, dx, axis=1)
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    x, y, w, h = ann["bbox"]
    return {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": [x + dx, y, w, h],
            "score": score, "segmentation": rle}  # fmt: skip


def test_per_class_report(tmp_path, monkeypatch, capsys):
    # A: perfect (AP 1); B: missed (AP 0); D: 1 of 2 found (AP 51/101); C: no GT (nan).
    cats = [{"id": i, "name": n} for i, n in ((5, "A"), (9, "B"), (11, "C"), (13, "D"))]
    images = [{"id": i, "width": 120, "height": 100, "file_name": f"{i}.png"} for i in (1, 2)]
    anns = [
        _rect_ann(1, 1, 5, 10, 10, 30, 30), _rect_ann(2, 2, 5, 50, 50, 20, 40),
        _rect_ann(3, 1, 9, 60, 10, 25, 25), _rect_ann(4, 1, 13, 10, 60, 30, 30),
        _rect_ann(5, 2, 13, 80, 5, 30, 30),
    ]  # fmt: skip
    gt = coco_from_dict({"images": images, "annotations": anns, "categories": cats})
    fp_c = {**_result(gt, anns[0], 0.7), "category_id": 11}
    results = [_result(gt, anns[0], 0.9), _result(gt, anns[1], 0.8), _result(gt, anns[3], 0.6), fp_c]
    stats, evals = evaluate_coco(gt, results, cat_ids=[5, 9, 11, 13], verbose=False)
    dataset = SimpleNamespace(cat_ids=[5, 9, 11, 13], cat_names=["A", "B", "C", "D"])
    table = reports.save_per_class_report(evals, dataset, str(tmp_path / "logs"))
    rows = {r["name"]: r for r in table["classes"]}
    for t in ("bbox", "segm"):
        assert rows["A"][f"{t}_AP"] == rows["A"][f"{t}_AP50"] == rows["A"][f"{t}_AP75"] == 1.0
        assert rows["B"][f"{t}_AP"] == 0.0
        assert rows["D"][f"{t}_AP"] == pytest.approx(51 / 101)
        assert np.isnan(rows["C"][f"{t}_AP"])
        # The mean over classes with GT is COCOeval's own summary AP.
        assert table["mean"][f"{t}_AP"] == pytest.approx(stats[t]["AP"])
    assert rows["D"]["category_id"] == 13
    printed = capsys.readouterr().out
    assert "bbox AP50" in printed and "nan" not in printed.lower()
    c_line = next(line for line in printed.splitlines() if line.startswith("C "))
    assert c_line.split()[2:] == ["–"] * 4  # undefined, not a number
    assert "mean (3/4 classes)" in printed and reports.FOOTNOTE in printed

    out = tmp_path / "logs"
    with open(out / "per_class_ap.csv") as f:
        csv_rows = {r["name"]: r for r in csv.DictReader(f)}
    assert csv_rows["A"]["segm_AP"] == "1.0000" and csv_rows["C"]["bbox_AP"] == ""
    assert "mean (3/4 classes)" in csv_rows and "nan" not in (out / "per_class_ap.csv").read_text().lower()
    assert csv_rows["D"]["category_id"] == "13"
    data = json.loads((out / "per_class_ap.json").read_text())
    by_name = {r["name"]: r for r in data["classes"]}
    assert by_name["C"]["bbox_AP"] is None and by_name["B"]["segm_AP"] == 0.0
    assert data["mean_over_classes"]["bbox_AP"] == 3 and "NaN" not in (out / "per_class_ap.json").read_text()
    for t in ("bbox", "segm"):
        png = cv2.imread(str(out / "pr_curves" / f"{t}_pr_curves.png"))
        assert png is not None and png.shape[0] > 100 and png.shape[1] > 300

    # Many classes: several pages of small multiples.
    monkeypatch.setattr(reports, "PLOTS_PER_PAGE", 3)
    reports.save_per_class_report(evals, dataset, str(tmp_path / "paged"), verbose=False)
    names = sorted(p.name for p in (tmp_path / "paged" / "pr_curves").iterdir())
    assert names == ["bbox_pr_curves_1of2.png", "bbox_pr_curves_2of2.png",
                     "segm_pr_curves_1of2.png", "segm_pr_curves_2of2.png"]  # fmt: skip
