"""Dataset tools and benchmark pipelines on generated data.

* ``sam_bbox_to_segm_batch``: exact polygon / area / fallback rules with a scripted segmenter;
  random-weight SAM2-t through the function and the script; the SAM (v1) path against
  ``Sam.forward`` on a tiny model; model-type, device and error handling.
* ``scripts/make_custom_dataset.py`` on a generated stand-in COCO (copy and ``--download``).
* ``scripts/matching_cdfsod_pipeline.sh`` end to end on a generated CD-FSOD layout; the dataset
  wrappers against a stub pipeline; argument checks of the other pipelines.
* ``coco_inst_to_segm``: COCO-20i mIoU on a hand-made case with a known answer.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from no_time_to_train.checkpoints.sam_box import SamModelSpec, build_box_segmenter, resolve_model_type
from no_time_to_train.data.polygons import mask_to_polygons
from no_time_to_train.data.synthetic import coco_categories, generate_coco_dataset
from no_time_to_train.errors import CheckpointError, ConfigError, UserInputError
from no_time_to_train.evaluation import semantic_miou
from no_time_to_train.models.box_prompt import Sam1BoxSegmenter
from no_time_to_train.tools import box_to_mask
from no_time_to_train.tools.box_to_mask import add_segmentations, resolve_device

from .conftest import REPO, write_yaml

PY = sys.executable
SCRIPTS = REPO / "scripts"


def decode(segm: list[list[float]], h: int, w: int) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, h, w))).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def run(
    cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
    full_env["no_proxy"] = full_env["NO_PROXY"]
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# ----------------------------------------------------------------------------------------------
# sam_bbox_to_segm_batch: rules, with a scripted segmenter


def box_only_dataset(root: Path, sizes: list[tuple[int, int]], boxes: dict[int, list[list[float]]]) -> dict:
    """Images ``1..n`` of the given (h, w) in ``root/images`` and a box-only json (no segmentation)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for img_id, (h, w) in enumerate(sizes, start=1):
        cv2.imwrite(
            str(root / "images" / f"{img_id:04d}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        )
        images.append({"id": img_id, "file_name": f"{img_id:04d}.png", "height": h, "width": w})
        for box in boxes.get(img_id, []):
            anns.append({"id": 100 + len(anns), "image_id": img_id, "category_id": 1 + len(anns) % 2,
                         "bbox": box, "iscrowd": 0})  # fmt: skip
    cats = [{"id": 1, "name": "boat"}, {"id": 2, "name": "bird"}]
    return {"info": {"description": "t"}, "images": images, "annotations": anns, "categories": cats}


class ScriptedSegmenter:
    """An ellipse inscribed in each box, except boxes wider than 60 px, which get an empty mask."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int]]] = []  # image sizes per call
        self.boxes_seen: list[np.ndarray] = []

    def segment(self, images, boxes):
        self.calls.append([img.shape[:2] for img in images])
        out = []
        for img, img_boxes in zip(images, boxes, strict=True):
            self.boxes_seen.append(np.asarray(img_boxes))
            masks = np.zeros((len(img_boxes), *img.shape[:2]), np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(img_boxes):
                if x2 - x1 <= 60:
                    centre = (int((x1 + x2) / 2), int((y1 + y2) / 2))
                    cv2.ellipse(masks[k], centre, (int((x2 - x1) / 2), int((y2 - y1) / 2)), 0, 0, 360, 1, -1)
            out.append(masks.astype(bool))
        return out


def test_polygons_areas_fallbacks_and_order(tmp_path):
    boxes = {
        1: [[10, 10, 40, 30], [5, 50, 80, 20], [30, 30, 0, 10]],  # normal, empty mask, zero-width box
        3: [[20, 15, 30, 30]],
    }  # image 2 has no annotation
    data = box_only_dataset(tmp_path, [(90, 100), (40, 40), (70, 60)], boxes)
    seg = ScriptedSegmenter()
    report = add_segmentations(
        data, tmp_path / "images", seg, batch_size=2, vis_dir=tmp_path / "vis", progress=False
    )
    out = report.data

    assert out["images"] == data["images"]  # all images kept, in order, unchanged
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in data["annotations"]]
    assert all("segmentation" not in a for a in data["annotations"])  # the input is not modified
    # Batches of 2 annotated images: images 1 and 3 together; the zero-width box is never prompted.
    assert seg.calls == [[(90, 100), (70, 60)]]
    np.testing.assert_allclose(seg.boxes_seen[0], [[10, 10, 50, 40], [5, 50, 85, 70]])

    normal, empty, degenerate, other = out["annotations"]
    expected = np.zeros((90, 100), np.uint8)
    cv2.ellipse(expected, (30, 25), (20, 15), 0, 0, 360, 1, -1)
    assert normal["area"] == expected.sum()
    assert iou(decode(normal["segmentation"], 90, 100), expected.astype(bool)) > 0.9
    assert all(len(p) > 4 and len(p) % 2 == 0 for p in normal["segmentation"])
    assert empty["segmentation"] == [[5.0, 50.0, 85.0, 50.0, 85.0, 70.0, 5.0, 70.0]]  # box rectangle
    assert empty["area"] == 80 * 20
    assert degenerate["segmentation"] == [[30.0, 30.0, 30.0, 30.0, 30.0, 40.0, 30.0, 40.0]]
    assert degenerate["area"] == 0
    assert other["area"] > 0 and other["bbox"] == [20, 15, 30, 30]
    assert report.box_fallbacks == 2 and report.images_without_annotations == 1
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["0001_segm.png", "0003_segm.png"]
    assert cv2.imread(str(tmp_path / "vis" / "0001_segm.png")).shape == (90, 100, 3)


def test_mask_to_polygons_pixel_centres_and_tiny_parts():
    mask = np.zeros((20, 20), bool)
    mask[2:6, 3:9] = True  # a 4 x 6 rectangle
    mask[15, 15] = True  # a single pixel: a 1-point contour, dropped
    mask[10, 2:4] = True  # two pixels: a 2-point contour (4 values), dropped
    polys = mask_to_polygons(mask)
    assert len(polys) == 1
    xs, ys = polys[0][0::2], polys[0][1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (3.5, 8.5, 2.5, 5.5)


def test_missing_images_and_checkpoint_errors(tmp_path, capsys):
    data = box_only_dataset(tmp_path, [(30, 30)] * 7, {i: [[1, 1, 10, 10]] for i in range(1, 8)})
    data["images"].append({"id": 8, "file_name": "never_there.png", "height": 5, "width": 5})  # no annotation
    json_path = tmp_path / "refs.json"
    json_path.write_text(json.dumps(data))
    for i in range(1, 7):
        (tmp_path / "images" / f"{i:04d}.png").unlink()
    ckpt = tmp_path / "sam_vit_h_4b8939.pth"
    args = ["--input_json", json_path, "--image_dir", tmp_path / "images", "--sam_checkpoint", ckpt]
    assert box_to_mask.main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert "6 annotated image(s)" in err and "0001.png" in err and "(6 in all)" in err
    assert "never_there" not in err  # images without annotations are not needed

    for i in range(1, 7):
        shutil.copy(tmp_path / "images" / "0007.png", tmp_path / "images" / f"{i:04d}.png")
    assert box_to_mask.main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert (
        "not found" in err and "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in err
    )
    assert not (tmp_path / "refs_with_segm.json").exists()


def test_model_type_resolution(tmp_path, tiny_ckpts):
    def touch(name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x")
        return path

    assert resolve_model_type("vit_h", touch("anything.pth")) == SamModelSpec("sam1", "vit_h")
    assert resolve_model_type("auto", touch("sam_vit_l_0b3195.pth")) == SamModelSpec("sam1", "vit_l")
    assert resolve_model_type(None, touch("sam2.1_hiera_base_plus.pt")) == SamModelSpec(
        "sam2", "sam2.1_hiera_b+.yaml"
    )
    assert resolve_model_type("sam2_hiera_l.yaml", touch("x.pt")) == SamModelSpec("sam2", "sam2_hiera_l.yaml")
    assert (
        resolve_model_type("configs/sam2.1/sam2.1_hiera_t.yaml", touch("x.pt")).name == "sam2.1_hiera_t.yaml"
    )
    # An unhelpful name: recognised from the weights (trunk width and depth).
    renamed = tmp_path / "my_model.pt"
    renamed.symlink_to(tiny_ckpts["sam2"])
    assert resolve_model_type("auto", renamed) == SamModelSpec("sam2", "sam2_hiera_t.yaml")

    with pytest.raises(ConfigError, match="pass --model_type sam2_hiera_l.yaml"):
        resolve_model_type("vit_h", touch("sam2_hiera_large.pt"))
    with pytest.raises(ConfigError, match="Valid values"):
        resolve_model_type("vit_x", touch("x.pt"))
    with pytest.raises(ConfigError, match="Cannot tell"):
        resolve_model_type("auto", touch("mystery.pt"))
    with pytest.raises(CheckpointError, match=r"segment_anything_2/072824/sam2_hiera_large\.pt"):
        resolve_model_type("auto", tmp_path / "missing" / "sam2_hiera_large.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a CPU-only machine")
def test_device_fallback_without_cuda():
    notices: list[str] = []
    assert resolve_device("cuda", notices.append) == "cpu"
    assert "CUDA is not available" in notices[0]
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError):
        resolve_device("gpu0")


def test_sam1_needs_segment_anything(tmp_path, monkeypatch):
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    ckpt.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails
    with pytest.raises(UserInputError, match="pip install segment-anything") as err:
        build_box_segmenter(resolve_model_type("vit_b", ckpt), ckpt, "cpu")
    assert "sam2_hiera_l.yaml" in str(err.value)


def tiny_sam1():
    """A SAM (v1) with the real structure but a 1-block, 32-wide image encoder."""
    pytest.importorskip("segment_anything")
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    encoder = ImageEncoderViT(
        depth=1, embed_dim=32, img_size=1024, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(), window_size=14,
        out_chans=256,
    )  # fmt: skip
    prompt = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=512, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )  # fmt: skip
    sam = Sam(
        encoder, prompt, decoder, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]
    )
    return sam.eval()


def test_sam1_segmenter_matches_sam_forward():
    """Batched encoding + chunked decoding gives exactly ``Sam.forward``'s masks."""
    from segment_anything.utils.transforms import ResizeLongestSide

    sam = tiny_sam1()
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
        rng.integers(0, 255, (150, 90, 3), dtype=np.uint8),
    ]
    boxes = [
        np.array([[10, 10, 80, 90], [100, 20, 190, 110], [0, 0, 200, 120]], float),
        np.array([[5, 5, 60, 100]], float),
    ]
    got = Sam1BoxSegmenter(sam, max_boxes_per_call=2).segment(images, boxes)

    transform = ResizeLongestSide(1024)
    batched = [
        {
            "image": torch.as_tensor(transform.apply_image(img)).permute(2, 0, 1).contiguous(),
            "boxes": transform.apply_boxes_torch(torch.as_tensor(b, dtype=torch.float), img.shape[:2]),
            "original_size": img.shape[:2],
        }
        for img, b in zip(images, boxes, strict=True)
    ]
    with torch.no_grad():
        expected = sam(batched, multimask_output=False)
    for g, e, img, b in zip(got, expected, images, boxes, strict=True):
        assert g.shape == (len(b), *img.shape[:2]) and g.dtype == bool
        np.testing.assert_array_equal(g, e["masks"][:, 0].numpy())


@pytest.fixture(scope="module")
def small_box_dataset(tmp_path_factory) -> dict:
    """Three synthetic images (one without annotations), segmentations stripped."""
    out = tmp_path_factory.mktemp("boxes")
    r = generate_coco_dataset(
        out, n_train=3, n_val=1, class_names=("boat", "bird"), n_shot=1, min_size=96, max_size=128,
        empty_fraction=0.34, seed=5, layout="custom",
    )  # fmt: skip
    data = json.loads(Path(r["train_json"]).read_text())
    for ann in data["annotations"]:
        del ann["segmentation"], ann["area"]
    path = out / "annotations" / "box_refs.json"
    path.write_text(json.dumps(data))
    assert len({a["image_id"] for a in data["annotations"]}) == 2 and len(data["images"]) == 3
    return {"json": path, "images": Path(r["train_img_dir"]), "data": data}


class Recorder:
    def __init__(self, inner) -> None:
        self.inner, self.masks = inner, []

    def segment(self, images, boxes):
        out = self.inner.segment(images, boxes)
        self.masks.extend(out)
        return out


def test_sam2_random_weights_function_and_script(small_box_dataset, tiny_ckpts, tmp_path):
    ds = small_box_dataset
    # Function: one image per call and one box per decoder call (the chunked path), masks recorded.
    spec = resolve_model_type("auto", tiny_ckpts["sam2"])
    assert spec == SamModelSpec("sam2", "sam2_hiera_t.yaml")
    rec = Recorder(build_box_segmenter(spec, tiny_ckpts["sam2"], "cpu", max_boxes_per_call=1))
    report = add_segmentations(ds["data"], ds["images"], rec, batch_size=1, progress=False)
    masks = [m for per_image in rec.masks for m in per_image]
    anns = report.data["annotations"]
    assert len(masks) == len(anns) == len(ds["data"]["annotations"])
    order = {img["id"]: k for k, img in enumerate(ds["data"]["images"])}
    by_image = sorted(anns, key=lambda a: order[a["image_id"]])  # the order the masks were made in
    for ann, mask in zip(by_image, masks, strict=True):
        img = next(i for i in ds["data"]["images"] if i["id"] == ann["image_id"])
        assert mask.shape == (img["height"], img["width"]) and mask.any()
        assert ann["area"] == mask.sum()  # area = mask pixels
        assert iou(decode(ann["segmentation"], img["height"], img["width"]), mask) > 0.8

    # Script, from the repository root as the README runs it: batched path, --device cuda falls back.
    json_copy = tmp_path / "refs.json"
    shutil.copy(ds["json"], json_copy)
    res = run(
        [PY, "no_time_to_train/dataset/sam_bbox_to_segm_batch.py", "--input_json", json_copy,
         "--image_dir", ds["images"], "--sam_checkpoint", tiny_ckpts["sam2"], "--device", "cuda",
         "--batch_size", "2", "--visualize"],
        cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "CUDA is not available; running on the CPU" in res.stdout
    out = json.loads((tmp_path / "refs_with_segm.json").read_text())
    assert out["images"] == ds["data"]["images"]  # the image without annotations is kept
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in anns]
    for a, b in zip(out["annotations"], anns, strict=True):
        assert abs(a["area"] - b["area"]) <= 0.01 * b["area"]  # batched vs single-image encoding
    vis = sorted(p.name for p in (tmp_path / "refs_with_SAM_segm").iterdir())
    annotated = sorted({a["image_id"] for a in anns})
    assert vis == [f"{Path(i['file_name']).stem}_segm.png" for i in out["images"] if i["id"] in annotated]


@pytest.mark.slow
def test_sam1_vit_b_checkpoint_through_the_script(small_box_dataset, tmp_path):
    """Real SAM ViT-B architecture with random weights, saved like Meta's file and loaded strictly."""
    pytest.importorskip("segment_anything")
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), ckpt)
    data = dict(small_box_dataset["data"])
    first = data["annotations"][0]["image_id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == first]
    (tmp_path / "one.json").write_text(json.dumps(data))
    res = run(
        [PY, REPO / "no_time_to_train/dataset/sam_bbox_to_segm_batch.py", "--input_json", tmp_path / "one.json",
         "--image_dir", small_box_dataset["images"], "--sam_checkpoint", ckpt, "--model_type", "vit_b",
         "--device", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SAM vit_b" in res.stdout
    out = json.loads((tmp_path / "one_with_segm.json").read_text())
    assert all(a["segmentation"] and a["area"] > 0 for a in out["annotations"])
    # The wrong size is refused with the checkpoint's real identity.
    res = run(
        [PY, REPO / "no_time_to_train/dataset/sam_bbox_to_segm_batch.py", "--input_json", tmp_path / "one.json",
         "--image_dir", small_box_dataset["images"], "--sam_checkpoint", ckpt, "--model_type", "vit_l"],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 1 and "does not match SAM vit_l" in res.stderr and "SAM vit_b" in res.stderr


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


# ----------------------------------------------------------------------------------------------
# Shell pipelines


def test_shell_scripts_parse():
    for script in sorted(SCRIPTS.glob("*.sh")):
        res = run(["bash", "-n", script], cwd=REPO)
        assert res.returncode == 0, f"{script.name}: {res.stderr}"


def mini_cdfsod(root: Path) -> Path:
    """``root/UODD`` laid out like a CD-FSOD dataset: box-only jsons, CD-FSOD class names and ids."""
    ds = root / "UODD"
    generate_coco_dataset(
        ds, n_train=2, n_val=1, class_names=("boat", "bird"), n_shot=1, train_dirname="train", val_dirname="test",
        min_size=128, max_size=160, empty_fraction=0, seed=1,
    )  # fmt: skip
    rename = {9: (1, "seacucumber"), 16: (2, "scallop")}
    for src, dst in (("instances_train.json", "1_shot.json"), ("instances_test.json", "test.json")):
        data = json.loads((ds / "annotations" / src).read_text())
        data["categories"] = [{"id": i, "name": n, "supercategory": "sea"} for i, n in rename.values()]
        for a in data["annotations"]:
            a["category_id"] = rename[a["category_id"]][0]
            del a["segmentation"], a["area"]
        (ds / "annotations" / dst).write_text(json.dumps(data))
        (ds / "annotations" / src).unlink()
    (ds / "annotations" / "references_1shot.pkl").unlink()
    return ds


def tiny_config(path: Path, ckpts: dict) -> str:
    return write_yaml(path, {
        "model": {"init_args": {
            "model_cfg": {
                "sam2_cfg_file": "sam2_hiera_t.yaml", "sam2_ckpt_path": ckpts["sam2"],
                "encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": ckpts["dinov2"],
                "sam2_infer_cfgs": {"points_per_side": 4, "testing_point_bs": 8},
            },
            "data_load_cfgs": {"workers": 0},
        }},
        "trainer": {"devices": 1, "accelerator": "cpu"},
    })  # fmt: skip


@pytest.mark.slow  # about 40 s on an idle 2-core CPU, over 60 s when the machine is busy
def test_cdfsod_pipeline_end_to_end(tmp_path, tiny_ckpts):
    ds = mini_cdfsod(tmp_path / "cd-fsod")
    work = tmp_path / "run"
    work.mkdir()
    env = {
        "CDFSOD_ROOT": str(tmp_path / "cd-fsod"), "PYTHON": PY, "SAM_CHECKPOINT": tiny_ckpts["sam2"],
        "EXTRA_CONFIG": tiny_config(tmp_path / "tiny.yaml", tiny_ckpts),
    }  # fmt: skip
    cmd = ["bash", SCRIPTS / "matching_cdfsod_pipeline.sh", "UODD", "1", "0", "seacucumber,scallop", "2"]
    res = run(cmd, cwd=work, env=env)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])

    ann = ds / "annotations"
    for name in ("1_shot", "test"):
        raw = json.loads((ann / f"{name}.json").read_text())
        segm = json.loads((ann / f"{name}_with_segm.json").read_text())
        assert segm["images"] == raw["images"] and len(segm["annotations"]) == len(raw["annotations"])
        assert all(a["segmentation"] and a["area"] > 0 for a in segm["annotations"])
    assert list((ann / "1_shot_with_SAM_segm").glob("*_segm.png"))  # references are visualised
    import pickle

    refs = pickle.loads((ann / "1_shot_with_segm.pkl").read_bytes())
    assert sorted(refs) == [1, 2] and all(len(v) == 1 for v in refs.values())
    ckpts = work / "tmp_ckpts" / "cd_fsod" / "matching"
    assert (ckpts / "UODD_1_refs_memory.pth").is_file()
    assert (ckpts / "UODD_1_refs_memory_postprocessed.pth").is_file()
    results_dir = work / "work_dirs" / "cd_fsod" / "UODD" / "1shot"
    results = json.loads((results_dir / "results.json").read_text())
    assert isinstance(results, list) and all(r["category_id"] in (1, 2) for r in results)
    log = (results_dir / "test.log").read_text()
    assert "BBOX RESULTS" in log and "SEGM RESULTS" in log
    assert "box->mask: using existing" not in res.stdout  # both jsons were made by this run

    # Re-running the same dataset never recomputes existing masks, and SKIP_SEGM=1 requires them.
    (ann / "test_with_segm.json").unlink()
    res = run(cmd, cwd=work, env={**env, "SKIP_SEGM": "1"})
    assert res.returncode == 1 and "SKIP_SEGM=1 but" in res.stderr and "test_with_segm.json" in res.stderr


def test_cdfsod_pipeline_argument_checks(tmp_path):
    script = SCRIPTS / "matching_cdfsod_pipeline.sh"
    res = run(["bash", script, "UODD", "1"], cwd=tmp_path)
    assert res.returncode == 2 and "DATASET_NAME SHOT DEVICES CAT_NAMES CATEGORY_NUM" in res.stderr
    res = run(["bash", script, "UODD", "1", "0", "a,b,c", "2", tmp_path], cwd=tmp_path)
    assert res.returncode == 1 and "CAT_NAMES lists 3 class(es) but CATEGORY_NUM is 2" in res.stderr
    res = run(["bash", script, "UODD", "1", "0", "a", "1"], cwd=tmp_path, env={"CDFSOD_ROOT": str(tmp_path)})
    assert res.returncode == 1 and f"dataset folder not found: {tmp_path}/UODD" in res.stderr
    res = run(["bash", script, "UODD", "one", "0", "a", "1"], cwd=tmp_path)
    assert res.returncode == 1 and "SHOT must be a positive integer" in res.stderr


@pytest.mark.parametrize(
    ("wrapper", "datasets"),
    [
        ("dior_fish.sh", {"DIOR": 20, "FISH": 1}),
        ("artaxor_clipart.sh", {"ArTaxOr": 7, "clipart1k": 20}),
        ("neu-det_uodd.sh", {"NEU-DET": 6, "UODD": 3}),
    ],
)
def test_cdfsod_wrappers_call_the_pipeline(tmp_path, wrapper, datasets):
    """Each wrapper runs the pipeline (with bash) for its datasets x shots with matching class counts."""
    shutil.copy(SCRIPTS / wrapper, tmp_path / wrapper)
    shutil.copytree(SCRIPTS / "lib", tmp_path / "lib")  # the shared loop the wrappers source
    (tmp_path / "matching_cdfsod_pipeline.sh").write_text('echo "$@" >> "$(dirname "$0")/calls.txt"\n')
    res = run(["bash", tmp_path / wrapper, "2,3"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    calls = [line.split(" ") for line in (tmp_path / "calls.txt").read_text().splitlines()]
    assert [(c[0], c[1]) for c in calls] == [(d, s) for d in datasets for s in ("1", "5", "10")]
    for name, _shot, devices, cat_names, num in calls:
        assert devices == "2,3" and len(cat_names.split(",")) == int(num) == datasets[name]
    (tmp_path / "calls.txt").unlink()
    first = next(iter(datasets))
    res = run(["bash", tmp_path / wrapper], cwd=tmp_path, env={"SHOTS": "5", "DATASETS": first})
    assert res.returncode == 0 and (tmp_path / "calls.txt").read_text().split(" ")[:3] == [first, "5", "0"]
    res = run(["bash", tmp_path / wrapper], cwd=tmp_path, env={"DATASETS": "COCO"})
    assert res.returncode == 2 and "unknown dataset 'COCO'" in res.stderr


def test_uodd_and_neu_det_class_lists():
    text = (SCRIPTS / "neu-det_uodd.sh").read_text()
    assert '[UODD]="seacucumber,seaurchin,scallop"' in text
    assert '[NEU-DET]="crazing,inclusion,patches,pitted_surface,rolled-in_scale,scratches"' in text


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("pascal_split.sh", ["4", "1"], "PASCAL_SPLIT must be 1, 2 or 3"),
        ("pascal_split.sh", ["1", "x"], "GPUS must be a positive number"),
        ("lvis_pipeline.sh", ["lvis_huge", "1"], "unknown LVIS split"),
        ("lvis_pipeline.sh", ["lvis_rare", "1,x"], "SHOTS must be positive integers"),
        ("few_shot_coco_semantic_pipeline.sh", ["5"], "COCO_SPLIT must be 1, 2, 3 or 4"),
    ],
)
def test_benchmark_pipeline_argument_checks(tmp_path, script, args, message):
    res = run(["bash", SCRIPTS / script, *args], cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr


@pytest.mark.parametrize(
    ("script", "args", "missing"),
    [
        ("pascal_split.sh", ["1", "1"], "data/pascal_voc/annotations/voc0712_trainval_with_segm.json"),
        ("lvis_pipeline.sh", ["lvis_rare", "1 5"], "data/lvis/lvis_v1_train.json"),
        ("few_shot_coco_semantic_pipeline.sh", ["1", "1"], "data/coco/annotations/instances_train2017.json"),
    ],
)
def test_benchmark_pipelines_name_missing_data(tmp_path, script, args, missing):
    res = run(["bash", SCRIPTS / script, *args], cwd=tmp_path)
    assert res.returncode == 1 and missing in res.stderr and "data/README.md" in res.stderr


@pytest.mark.parametrize(
    "name", ["matching_pascal_voc_few_shot_template.yaml", "matching_lvis_allClass.yaml"]
)
def test_new_templates_load(name):
    res = run([PY, "run_lightening.py", "test", "--config", f"no_time_to_train/pl_configs/{name}", "--print_config"],
              cwd=REPO)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]


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
