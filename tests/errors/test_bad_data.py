"""Bad inputs, one test per case: classes, shots, references and images
(conventions: ``tests/errors/__init__.py``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from no_time_to_train.data.datasets import COCOMemoryFillCropDataset, COCORefTestDataset
from no_time_to_train.data.images import load_rgb
from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.errors import DatasetError
from no_time_to_train.models.matching import class_prototypes
from no_time_to_train.pipeline.references import crop_window

from ..conftest import run_cli
from ..helpers import (
    BANK_FLAG,
    FILL_FLAG,
    TEST_FLAG,
    base,
    expect_user_error,
    oracle_yaml,
    results_ok,
    write_json,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# classes, shots and references
# ---------------------------------------------------------------------------------------------


def _fill(cfg: str, tmp: Path, *extra) -> list:
    return [*base(cfg), "--model.test_mode", "fill_memory", "--out_path", tmp / "m.ckpt", *extra]


def test_invalid_bank_size_in_the_config(in_tmp, synth, capsys):
    # Raised in the model's __init__, which jsonargparse wraps in a ValueError of its own.
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(capsys, _fill(cfg, in_tmp, f"{BANK_FLAG}.category_num", 0), "category_num (0)", ">= 1")


def test_cat_names_absent_from_the_json(in_tmp, synth, capsys):
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{FILL_FLAG}.cat_names", "person,car,unicorn"),
        "fill_memory.cat_names", "'unicorn'", "categories[].name",
    )  # fmt: skip


def test_category_num_disagrees_with_the_selected_classes(in_tmp, synth, capsys):
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{BANK_FLAG}.category_num", 2),
        "selects 3 classes", "memory_bank_cfg.category_num 3",
    )  # fmt: skip


def test_length_disagrees_with_the_reference_pickle(in_tmp, synth, capsys):
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{BANK_FLAG}.length", 3),
        synth["reference_pkl"], "has 2 references", "memory_bank_cfg.length",
    )  # fmt: skip


def test_class_without_reference(in_tmp, synth, capsys):
    refs = load_reference_pkl(synth["reference_pkl"])
    refs.pop(synth["category_ids"][1])
    pkl = in_tmp / "refs.pkl"
    pkl.write_bytes(pickle.dumps(refs))
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{FILL_FLAG}.memory_pkl", pkl),
        str(pkl), f"no references for class '{synth['class_names'][1]}'", "few_shot_sampling.py",
    )  # fmt: skip


def _reference_anns(synth: dict) -> tuple[dict, list[int]]:
    refs = load_reference_pkl(synth["reference_pkl"])
    data = json.loads(Path(synth["train_json"]).read_text())
    cat = synth["category_ids"][1]
    return data, [e["ann_ids"][0] for e in refs[cat]]


def test_reference_without_a_mask(in_tmp, synth, capsys):
    # Boxes only: the user skipped sam_bbox_to_segm_batch.py.
    data, ann_ids = _reference_anns(synth)
    for ann in data["annotations"]:
        if ann["id"] in ann_ids:
            ann.pop("segmentation")
    js = write_json(in_tmp / "boxes_only.json", data)
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{FILL_FLAG}.json_file", js),
        js, f"annotation {ann_ids[0]}", "segmentation", "sam_bbox_to_segm_batch.py",
    )  # fmt: skip


def _masks_outside_the_crop(synth: dict, path: Path, ann_ids: list[int]) -> str:
    """The train json with the masks of ``ann_ids`` moved outside their crop windows."""
    data = json.loads(Path(synth["train_json"]).read_text())
    imgs = {i["id"]: i for i in data["images"]}
    for ann in data["annotations"]:
        if ann["id"] in ann_ids:
            info = imgs[ann["image_id"]]
            w, h = info["width"], info["height"]
            x1, y1, x2, y2 = crop_window(ann["bbox"], w, h, 0.2)
            # a 3x3 square in the corner farthest from the window
            cx, cy = (0 if x1 > w - x2 else w - 4), (0 if y1 > h - y2 else h - 4)
            assert not (x1 <= cx < x2 and y1 <= cy < y2)
            ann["segmentation"] = [[cx, cy, cx + 3, cy, cx + 3, cy + 3, cx, cy + 3]]
    return write_json(path, data)


def test_reference_masks_all_empty_after_cropping(in_tmp, synth, capsys):
    _, ann_ids = _reference_anns(synth)
    js = _masks_outside_the_crop(synth, in_tmp / "far_masks.json", ann_ids)
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{FILL_FLAG}.json_file", js),
        f"['{synth['class_names'][1]}']", "mask pixel", str(ann_ids), js, "other references",
    )  # fmt: skip
    assert not (in_tmp / "m.ckpt").exists()


def test_one_reference_mask_empty_after_cropping(in_tmp, synth, capsys):
    # The other shot of the class still defines its prototype: warn and go on, with no NaN.
    _, ann_ids = _reference_anns(synth)
    js = _masks_outside_the_crop(synth, in_tmp / "far_mask.json", ann_ids[:1])
    cfg = oracle_yaml(in_tmp / "c.yaml", synth, dataset_cfgs={"fill_memory": {"json_file": js}})
    mem, post = in_tmp / "m.ckpt", in_tmp / "p.ckpt"
    run_cli(_fill(cfg, in_tmp))
    assert f"reference annotations {ann_ids[:1]}" in capsys.readouterr().out
    run_cli([*base(cfg), "--model.test_mode", "postprocess_memory", "--ckpt_path", mem, "--out_path", post])
    sd = torch.load(post, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    protos = class_prototypes(sd["memory.mem_feats_ins_avg"], sd["memory.mem_fill_counts"])
    assert torch.allclose(protos.norm(dim=1), torch.ones(3))


def test_k1_bank_has_no_nan_and_segments(in_tmp, bank):
    sd = torch.load(bank.post, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in sd.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    assert torch.allclose(sd["memory.mem_ins_sim_avg"], torch.ones(3))  # the reference: NaN
    res = in_tmp / "results.json"
    cli = run_cli(
        [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_result", res]
    )
    assert results_ok(res)
    assert cli.model.last_stats["segm"]["AP"] >= 0.8


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def test_images_absent_from_root(in_tmp, bank, capsys):
    empty = in_tmp / "empty_root"
    empty.mkdir()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, f"{TEST_FLAG}.root", empty],
        "Image not found", str(empty), "root",
    )  # fmt: skip


def test_corrupt_image_read_in_a_dataloader_worker(in_tmp, bank, synth, capsys):
    root = in_tmp / "val"
    root.mkdir()
    for p in Path(synth["val_img_dir"]).iterdir():
        (root / p.name).write_bytes(p.read_bytes())
    victim = sorted(root.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated PNG
    msg = expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, f"{TEST_FLAG}.root", root,
         "--model.init_args.data_load_cfgs.workers", 1],
        str(victim), "corrupt",
    )  # fmt: skip
    assert "DataLoader worker" not in msg and "Original" not in msg


def test_image_size_disagrees_with_the_json(tmp_path, synth):
    data = json.loads(Path(synth["val_json"]).read_text())
    data["images"][0]["width"] += 10
    js = write_json(tmp_path / "val.json", data)
    ds = COCORefTestDataset(synth["val_img_dir"], js, image_size=64)
    with pytest.raises(DatasetError, match="json says") as exc:
        ds[0]
    assert data["images"][0]["file_name"] in str(exc.value)


def _write_variant(src: Path, dst: Path, kind: str) -> None:
    rgb = Image.open(src).convert("RGB")
    if kind == "gray":
        rgb.convert("L").save(dst)
    elif kind == "rgba":
        img = rgb.convert("RGBA")
        img.putalpha(128)
        img.save(dst)
    elif kind == "palette":
        rgb.convert("P", palette=Image.ADAPTIVE, colors=64).save(dst)
    elif kind in ("16bit", "12bit"):  # full-range 16-bit, and 12-bit data in a 16-bit file
        arr = np.asarray(rgb.convert("L"), dtype=np.uint16) * (257 if kind == "16bit" else 16)
        Image.fromarray(arr).save(dst)
    else:
        rgb.save(dst)


@pytest.mark.parametrize("kind", ["gray", "rgba", "palette", "16bit", "12bit"])
def test_unusual_image_modes_load_as_8bit_rgb(tmp_path, synth, kind):
    src = sorted(Path(synth["val_img_dir"]).iterdir())[0]
    dst = tmp_path / f"{kind}.png"
    _write_variant(src, dst, kind)
    img = load_rgb(str(dst))
    ref = np.asarray(Image.open(src).convert("RGB"), dtype=np.int16)
    arr = np.asarray(img, dtype=np.int16)
    assert img.mode == "RGB" and arr.shape == ref.shape
    if kind in ("rgba", "palette"):
        assert np.abs(arr - ref).mean() < 8  # colour kept (alpha dropped, not blended)
    else:
        gray = np.asarray(Image.open(src).convert("L"), dtype=np.int16)
        # high-bit data scaled by its bit depth: not clipped at 255, not stretched per image
        assert np.abs(arr[..., 0] - gray).max() <= 1


KINDS = ["gray", "rgba", "palette", "16bit", "rgb"]


def _odd_split(tmp: Path, synth: dict, split: str) -> tuple[str, dict]:
    """A copy of a split with its images in every unusual mode (PNG), plus a tiny 8x8 image
    (id 10**6) holding a 4x4 object of the first class (annotation id 10**6)."""
    data = json.loads(Path(synth[f"{split}_json"]).read_text())
    root = tmp / split
    root.mkdir()
    for i, info in enumerate(data["images"]):
        src = Path(synth[f"{split}_img_dir"]) / info["file_name"]
        info["file_name"] = Path(info["file_name"]).stem + ".png"
        _write_variant(src, root / info["file_name"], KINDS[i % len(KINDS)])
    tiny = np.full((8, 8, 3), 128, np.uint8)
    tiny[2:6, 2:6] = synth["class_colors"][synth["category_ids"][0]]
    Image.fromarray(tiny).save(root / "tiny.png")
    data["images"].append({"id": 10**6, "file_name": "tiny.png", "width": 8, "height": 8})
    data["annotations"].append({
        "id": 10**6, "image_id": 10**6, "category_id": synth["category_ids"][0], "iscrowd": 0,
        "bbox": [2, 2, 4, 4], "area": 16.0, "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]],
    })  # fmt: skip
    return str(root), data


def test_unusual_and_tiny_target_images_end_to_end(in_tmp, bank, synth):
    root, data = _odd_split(in_tmp, synth, "val")
    js = write_json(in_tmp / "val.json", data)
    res = in_tmp / "results.json"
    run_cli([*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_result", res,
             f"{TEST_FLAG}.root", root, f"{TEST_FLAG}.json_file", js])  # fmt: skip
    results = results_ok(res)
    assert 10**6 in {r["image_id"] for r in results}  # the 8x8 image


def test_unusual_and_tiny_reference_images(tmp_path, synth):
    root, data = _odd_split(tmp_path, synth, "train")
    js = write_json(tmp_path / "train.json", data)
    refs = load_reference_pkl(synth["reference_pkl"])
    refs[synth["category_ids"][0]][0] = {"img_id": 10**6, "ann_ids": [10**6]}
    pkl = tmp_path / "refs.pkl"
    pkl.write_bytes(pickle.dumps(refs))
    modes = {Image.open(Path(root) / i["file_name"]).mode for i in data["images"]}
    assert {"L", "RGBA", "P", "RGB"} <= modes and modes & {"I;16", "I"}
    ds = COCOMemoryFillCropDataset(root, js, str(pkl), image_size=518, memory_length=2,
                                   cat_names=list(synth["class_names"]))  # fmt: skip
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 518, 518) and torch.isfinite(item["image"]).all()
        assert item["image"].max() > 0 and item["mask"].max() > 0.5
