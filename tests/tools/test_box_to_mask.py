"""The box-to-mask tool (``sam_bbox_to_segm_batch.py``): exact polygon / area / fallback rules with
a scripted segmenter; random-weight SAM2-t through the function and the script; the SAM (v1) path
against ``Sam.forward`` on a tiny model; model-type, device and error handling."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from no_time_to_train.checkpoints.sam_box import SamModelSpec, build_box_segmenter, resolve_model_type
from no_time_to_train.data.polygons import mask_to_polygons
from no_time_to_train.data.synthetic import generate_coco_dataset
from no_time_to_train.errors import CheckpointError, ConfigError, UserInputError
from no_time_to_train.models.box_prompt import Sam1BoxSegmenter
from no_time_to_train.tools import box_to_mask
from no_time_to_train.tools.box_to_mask import add_segmentations, resolve_device

from ..conftest import REPO
from .common import PY, decode, iou, run

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
