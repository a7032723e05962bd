"""Bad inputs (method-spec §10 "Failure modes" / "Fragile CLI"), one test per case.

A user error stops the CLI with exit code 2 and one paragraph on stderr that names the file or flag
and the fix, never a traceback. Cases that have a right answer (K = 1, images without detections,
unusual image formats, running postprocess twice) must give it, with no NaN anywhere. Files are
written atomically and outputs never overwrite inputs.

Almost every case drives the CLI in-process with the colour-oracle networks (``tests.oracle``),
which take seconds; the real SAM2 / DINOv2 loaders appear only where they are what is tested.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from no_time_to_train.data.datasets import COCOMemoryFillCropDataset, COCORefTestDataset
from no_time_to_train.data.images import load_rgb
from no_time_to_train.errors import DatasetError
from no_time_to_train.io_utils import atomic_save_json
from no_time_to_train.models.matching import class_prototypes
from no_time_to_train.models.sam2_proposer import Proposals
from no_time_to_train.output.exports import export_prediction
from no_time_to_train.pipeline import memory_io
from no_time_to_train.pipeline.references import crop_window

from .conftest import REPO, run_cli
from .helpers import (
    BANK_FLAG,
    FILL_FLAG,
    REAL_MODEL,
    TEST_FLAG,
    base,
    expect_user_error,
    oracle_yaml,
    results_ok,
    write_json,
)  # fmt: skip
from .oracle import OracleMatcherModel


class NoMaskProposer(nn.Module):
    """No proposal at all (``kind="none"``), or proposals whose masks are all empty ("blank")."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, image: torch.Tensor) -> Proposals:
        n = 0 if self.kind == "none" else 5
        logits = torch.full((n, 256, 256), -10.0, device=image.device)
        return Proposals(logits, torch.full((n,), 0.9, device=image.device), torch.zeros(n, 2))


class NoMaskModel(OracleMatcherModel):
    """The oracle model whose proposer never yields a usable mask."""

    def __init__(self, *args, proposals: str = "none", **kwargs):
        self.proposals = proposals
        super().__init__(*args, **kwargs)

    def build_proposer(self) -> nn.Module:
        return NoMaskProposer(self.proposals)


# ---------------------------------------------------------------------------------------------
# checkpoints and SAM2 config (the real loaders)
# ---------------------------------------------------------------------------------------------


def test_missing_encoder_checkpoint(in_tmp, synth, capsys):
    cfg = oracle_yaml(in_tmp / "c.yaml", synth, class_path=REAL_MODEL)
    missing = in_tmp / "nowhere" / "dinov2_vitl14_pretrain.pth"
    expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "fill_memory", "--out_path", in_tmp / "m.ckpt",
         "--model.init_args.model_cfg.encoder_ckpt_path", missing],
        str(missing), "not found", "dinov2_vitl14_pretrain.pth", "download",
    )  # fmt: skip


def _real_test_cfg(tmp: Path, synth: dict) -> str:
    # A random-weight DINOv2-S (built in a second) so that the run reaches the SAM2 builder.
    return oracle_yaml(tmp / "real.yaml", synth, class_path=REAL_MODEL,
                       model_cfg={"encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": None})  # fmt: skip


def test_truncated_sam2_checkpoint(in_tmp, synth, capsys):
    cfg = _real_test_cfg(in_tmp, synth)
    whole = in_tmp / "whole.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, whole)
    cut = in_tmp / "sam2_hiera_large.pt"
    cut.write_bytes(whole.read_bytes()[:600])
    expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "test", "--model.init_args.model_cfg.sam2_ckpt_path", cut],
        str(cut), "truncated", "download",
    )  # fmt: skip


def test_unknown_sam2_config(in_tmp, synth, capsys):
    cfg = _real_test_cfg(in_tmp, synth)
    expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "test", "--model.init_args.model_cfg.sam2_cfg_file", "sam2_hiera_xl.yaml"],
        "sam2_hiera_xl.yaml", "sam2_cfg_file", "sam2_hiera_l.yaml",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# memory files
# ---------------------------------------------------------------------------------------------


def test_missing_memory_file(in_tmp, bank, capsys):
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", in_tmp / "nope.ckpt"],
        "--ckpt_path", "nope.ckpt", "not found", "--out_path",
    )  # fmt: skip


def test_truncated_memory_file(in_tmp, bank, capsys):
    cut = in_tmp / "memory_postprocessed.ckpt"
    cut.write_bytes(bank.post.read_bytes()[: bank.post.stat().st_size // 2])
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", cut],
        str(cut), "truncated", "fill_memory",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        (f"{BANK_FLAG}.length", 3, "memory_bank_cfg.length"),
        (f"{BANK_FLAG}.category_num", 4, "memory_bank_cfg.category_num"),
        ("--model.init_args.model_cfg.encoder_cfg.name", "dinov2_small", "encoder_cfg.name"),
    ],
)
def test_memory_file_from_another_config(in_tmp, bank, capsys, flag, value, needle):
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, flag, value],
        str(bank.post), needle, "does not match",
    )  # fmt: skip


def test_memory_file_of_an_older_version(in_tmp, bank, capsys):
    ckpt = torch.load(bank.post, map_location="cpu", weights_only=True)
    ckpt[memory_io.META_KEY]["format_version"] = 0
    old = in_tmp / "old.ckpt"
    torch.save(ckpt, old)
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", old],
        str(old), "version 0", "fill_memory",
    )  # fmt: skip


def test_memory_file_of_the_reference_implementation(in_tmp, bank, capsys):
    ref = in_tmp / "reference_memory.ckpt"
    hparams = {"model_cfg": {"name": "matching_baseline_noAMG"}, "test_mode": "fill_memory"}
    torch.save({"state_dict": {"seg_model.mem_feats": torch.zeros(2, 3)}, "hyper_parameters": hparams,
                "epoch": 0}, ref)  # fmt: skip
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", ref],
        str(ref), "original implementation", "fill_memory",
    )  # fmt: skip


def test_test_on_a_bank_that_was_never_postprocessed(in_tmp, bank, capsys):
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.mem],
        "--ckpt_path", "postprocess_memory",
    )  # fmt: skip


def test_fill_memory_refuses_a_filled_bank(in_tmp, bank, capsys):
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "fill_memory", "--ckpt_path", bank.mem, "--out_path", in_tmp / "m.ckpt"],
        "fill_memory", "--ckpt_path",
    )  # fmt: skip


def test_postprocess_twice_is_idempotent(in_tmp, bank, capsys):
    again = in_tmp / "again.ckpt"
    run_cli(
        [
            *base(bank.cfg),
            "--model.test_mode",
            "postprocess_memory",
            "--ckpt_path",
            bank.post,
            "--out_path",
            again,
        ]
    )
    assert "already postprocessed" in capsys.readouterr().out
    first = torch.load(bank.post, map_location="cpu", weights_only=True)["state_dict"]
    second = torch.load(again, map_location="cpu", weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_out_path_equal_to_ckpt_path(in_tmp, bank, capsys):
    before = bank.post.read_bytes()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "postprocess_memory", "--ckpt_path", bank.post, "--out_path", bank.post],
        "--out_path", "--ckpt_path", str(bank.post),
    )  # fmt: skip
    assert bank.post.read_bytes() == before


def test_export_result_onto_the_test_json_is_refused(in_tmp, bank, synth, capsys):
    # A copy: without the check the shared generated json would be overwritten.
    js = in_tmp / "targets.json"
    js.write_bytes(Path(synth["val_json"]).read_bytes())
    before = js.read_bytes()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, f"{TEST_FLAG}.json_file", js,
         "--export_result", js],
        "--export_result", str(js), "dataset_cfgs.test.json_file",
    )  # fmt: skip
    assert js.read_bytes() == before


def test_out_path_onto_the_reference_pickle_is_refused(in_tmp, bank, capsys):
    pkl = in_tmp / "refs.pkl"
    pkl.write_bytes(Path(bank.pkl).read_bytes())
    before = pkl.read_bytes()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "fill_memory", f"{FILL_FLAG}.memory_pkl", pkl, "--out_path", pkl],
        "--out_path", str(pkl), "memory_pkl",
    )  # fmt: skip
    assert pkl.read_bytes() == before


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
    with open(synth["reference_pkl"], "rb") as f:
        refs = pickle.load(f)
    refs.pop(synth["category_ids"][1])
    pkl = in_tmp / "refs.pkl"
    pkl.write_bytes(pickle.dumps(refs))
    cfg = oracle_yaml(in_tmp / "c.yaml", synth)
    expect_user_error(
        capsys, _fill(cfg, in_tmp, f"{FILL_FLAG}.memory_pkl", pkl),
        str(pkl), f"no references for class '{synth['class_names'][1]}'", "few_shot_sampling.py",
    )  # fmt: skip


def _reference_anns(synth: dict) -> tuple[dict, list[int]]:
    with open(synth["reference_pkl"], "rb") as f:
        refs = pickle.load(f)
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
    with open(synth["reference_pkl"], "rb") as f:
        refs = pickle.load(f)
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


# ---------------------------------------------------------------------------------------------
# target sets without detections
# ---------------------------------------------------------------------------------------------


def test_empty_target_set(in_tmp, bank, synth, capsys):
    data = json.loads(Path(synth["val_json"]).read_text())
    data["images"], data["annotations"] = [], []
    js = write_json(in_tmp / "no_images.json", data)
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, f"{TEST_FLAG}.json_file", js],
        js, "no images", "dataset_cfgs.test.json_file",
    )  # fmt: skip


def test_targets_without_annotations(in_tmp, bank, synth, capsys):
    data = json.loads(Path(synth["val_json"]).read_text())
    data["annotations"] = []
    js = write_json(in_tmp / "unlabelled.json", data)
    res = in_tmp / "results.json"
    cli = run_cli([*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_result", res,
                   f"{TEST_FLAG}.json_file", js])  # fmt: skip
    assert results_ok(res)  # unlabelled targets still get their predictions
    assert "no ground-truth annotations" in capsys.readouterr().out
    assert all(v == -1 for s in cli.model.last_stats.values() for v in s.values())  # undefined, not 0


@pytest.mark.parametrize("proposals", ["none", "blank"])
def test_images_without_any_surviving_mask(in_tmp, bank, synth, proposals):
    cfg = oracle_yaml(in_tmp / "c.yaml", synth, class_path="tests.test_bad_inputs.NoMaskModel",
                      proposals=proposals, model_cfg={"memory_bank_cfg": {"length": 1}})  # fmt: skip
    res = in_tmp / "results.json"
    cli = run_cli([*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_result", res])
    assert json.loads(res.read_text()) == []
    assert all(v == 0 for s in cli.model.last_stats.values() for v in s.values())


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def test_interrupted_memory_write_keeps_the_previous_file(in_tmp, bank, monkeypatch):
    out = in_tmp / "memory_postprocessed.ckpt"
    out.write_bytes(b"previous memory file")
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, in_tmp / "scratch.pt")
        data = (in_tmp / "scratch.pt").read_bytes()
        if hasattr(f, "write"):
            f.write(data[: len(data) // 2])
        else:
            Path(f).write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        run_cli(
            [
                *base(bank.cfg),
                "--model.test_mode",
                "postprocess_memory",
                "--ckpt_path",
                bank.mem,
                "--out_path",
                out,
            ]
        )
    assert out.read_bytes() == b"previous memory file"
    assert sorted(p.name for p in in_tmp.iterdir() if p.name.startswith(".")) == []


def test_interrupted_json_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("[1, 2, 3]")

    def dying_dump(obj, f, **kwargs):
        f.write('[{"image_id": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dying_dump)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_json([{"image_id": 1}], path)
    assert path.read_text() == "[1, 2, 3]"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_interrupted_export_keeps_the_previous_files(tmp_path, monkeypatch):
    masks = torch.zeros((1, 8, 8), dtype=torch.bool)
    masks[0, 2:5, 2:5] = True

    def export() -> list[str]:
        return export_prediction(masks.numpy(), np.array([[2.0, 2, 4, 4]]), [0.9], [0], "img.png", ["person"],
                                 [1], str(tmp_path), "png")  # fmt: skip

    written = export()
    before = {p: Path(p).read_bytes() for p in written}

    def dying_dump(obj, f, **kwargs):
        f.write("[{")
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dying_dump)
    with pytest.raises(KeyboardInterrupt):
        export()
    assert {p: Path(p).read_bytes() for p in written} == before
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["inst_000.png", "instances.json"]


# ---------------------------------------------------------------------------------------------
# several processes
# ---------------------------------------------------------------------------------------------


def _run_ddp(tmp: Path, cfg: str, *extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    args = [*base(cfg), "--model.test_mode", "fill_memory", "--out_path", tmp / "m.ckpt",
            "--trainer.devices", 2, "--trainer.strategy", "ddp", *extra]  # fmt: skip
    return subprocess.run(
        [sys.executable, str(REPO / "run_lightening.py"), *map(str, args)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_user_errors_in_ddp_processes(tmp_path, synth):
    cfg = oracle_yaml(tmp_path / "c.yaml", synth)
    # The same error on both ranks: each process prints its paragraph.
    proc = _run_ddp(tmp_path, cfg, f"{BANK_FLAG}.category_num", 2)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error: dataset_cfgs.fill_memory selects 3 classes" in proc.stderr
    assert "error (process 1): dataset_cfgs.fill_memory selects 3 classes" in proc.stderr

    # An error on rank 1 only (its second reference image is corrupt): rank 1 says why, rank 0
    # (waiting for it in the gather) says that it lost its peer, and neither prints a traceback.
    with open(synth["reference_pkl"], "rb") as f:
        img_id = pickle.load(f)[synth["category_ids"][0]][1]["img_id"]  # dataset index 1 -> rank 1
    data = json.loads(Path(synth["train_json"]).read_text())
    name = next(i["file_name"] for i in data["images"] if i["id"] == img_id)
    root = tmp_path / "train"
    root.mkdir()
    for p in Path(synth["train_img_dir"]).iterdir():
        (root / p.name).write_bytes(p.read_bytes()[: 300 if p.name == name else None])
    proc = _run_ddp(tmp_path, cfg, f"{FILL_FLAG}.root", root)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"error (process 1): Could not read image {root / name}" in proc.stderr
    assert "error: another process of this multi-device run stopped" in proc.stderr


def test_target_annotations_of_unlisted_categories_are_ignored(tmp_path, synth):
    """Targets whose json keeps annotations of categories it does not list (the README's custom
    example) evaluate and visualise the selected classes only."""
    import json

    from no_time_to_train.data.datasets import COCORefTestDataset

    data = json.loads(open(synth["val_json"]).read())
    bird = next(c for c in data["categories"] if c["name"] == "bird")
    data["categories"] = [bird]
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(data))
    ds = COCORefTestDataset(synth["val_img_dir"], str(path), cat_names=["bird"])
    assert {a["category_id"] for a in ds.coco.dataset["annotations"]} == {bird["id"]}
    for img_id in ds.img_ids:
        assert set(ds.gt_by_image(img_id)) <= {0}
