"""Hostile and incomplete input: untrusted pickles, invalid COCO files, box-only ground truth,
huge images, unwritable outputs. Each case checks the message a user sees and that nothing was
written."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from no_time_to_train.data.coco_checks import validate_coco
from no_time_to_train.data.datasets import COCOMemoryFillCropDataset
from no_time_to_train.data.reference_sets import load_reference_pkl, save_reference_pkl
from no_time_to_train.errors import DatasetError
from no_time_to_train.tools import coco_to_pkl

from ..helpers import FILL_FLAG, TEST_FLAG, base, expect_user_error, oracle_yaml

# ---------------------------------------------------------------------------------------------
# reference sets: restricted pickles and JSON
# ---------------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls os.system: what a crafted 'reference pickle' can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_reference_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "refs.pkl"
    evil.write_bytes(pickle.dumps({1: [{"img_id": 1, "ann_ids": [_RunsCode(marker)]}]}))
    with pytest.raises(
        DatasetError, match=r"refs\.pkl is not a plain reference pickle: it names (posix|os)\.system"
    ):
        load_reference_pkl(evil)
    assert not marker.exists()
    # The reference's own format, an OrderedDict of plain entries, still loads.
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps(OrderedDict({3: [{"img_id": 7, "ann_ids": [70, 71]}]})))
    assert load_reference_pkl(ok) == {3: [{"img_id": 7, "ann_ids": [70, 71]}]}


def test_crafted_reference_pickle_stops_fill_memory_before_anything_runs(in_tmp, synth, capsys):
    marker = in_tmp / "pwned"
    evil = in_tmp / "refs.pkl"
    evil.write_bytes(pickle.dumps({1: [{"img_id": 1, "ann_ids": [1]}], 2: _RunsCode(marker)}))
    cfg = oracle_yaml(in_tmp / "o.yaml", synth)
    argv = [*base(cfg), "--model.test_mode", "fill_memory", "--out_path", in_tmp / "m.ckpt",
            f"{FILL_FLAG}.memory_pkl", evil]  # fmt: skip
    expect_user_error(capsys, argv, str(evil), "not a plain reference pickle", "as JSON")
    assert not marker.exists() and not (in_tmp / "m.ckpt").exists()


def test_reference_sets_round_trip_as_json_and_feed_fill_memory(tmp_path, synth):
    refs = load_reference_pkl(synth["reference_pkl"])
    as_json = tmp_path / "refs.json"
    save_reference_pkl(refs, as_json)
    assert json.loads(as_json.read_text())  # plain JSON, string keys
    assert load_reference_pkl(as_json) == refs
    kw = dict(root=synth["train_img_dir"], json_file=synth["train_json"], memory_length=2,
              cat_names=list(synth["class_names"]))  # fmt: skip
    from_pkl = COCOMemoryFillCropDataset(memory_pkl=synth["reference_pkl"], **kw)
    from_json = COCOMemoryFillCropDataset(memory_pkl=str(as_json), **kw)
    assert from_pkl.items == from_json.items and len(from_json) == 6
    # The conversion tool writes JSON when asked for a .json output.
    out = tmp_path / "custom.json"
    assert coco_to_pkl.main([synth["train_json"], str(out), "2"]) == 0
    assert set(load_reference_pkl(out)) == set(synth["category_ids"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"person": [{"img_id": 1, "ann_ids": [2]}]}))
    with pytest.raises(DatasetError, match=r"bad\.json: key 'person' is not a category id"):
        load_reference_pkl(bad)


# ---------------------------------------------------------------------------------------------
# COCO files: refused or handled, decided per case
# ---------------------------------------------------------------------------------------------


def _coco(anns: list[dict], images: list[dict] | None = None) -> dict:
    images = images or [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
                        {"id": 2, "file_name": "b.png", "width": 100, "height": 80}]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _ann(i: int, box: list | None = None, segm: object = "square", image_id: int = 1, cat: int = 1) -> dict:
    if segm == "square":
        segm = [[10, 10, 40, 10, 40, 40, 10, 40]]
    a = {"id": i, "image_id": image_id, "category_id": cat, "iscrowd": 0, "area": 900.0,
         "bbox": [10, 10, 30, 30] if box is None else box}  # fmt: skip
    if segm is not None:
        a["segmentation"] = segm
    return a


@pytest.mark.parametrize(
    "data,needles",
    [
        (
            _coco(
                [_ann(1)],
                [
                    {"id": 1, "file_name": "a.png", "width": 9, "height": 9},
                    {"id": 1, "file_name": "b.png", "width": 9, "height": 9},
                ],
            ),  # fmt: skip
            ["image id(s) [1]", "more than once"],
        ),
        (_coco([_ann(1), _ann(1)]), ["annotation id(s) [1]", "more than once"]),
        (_coco([_ann(1, image_id=5)]), ["annotation(s) [1] (1 in all) name image id(s) [5]"]),
        (_coco([_ann(4, box=[10, 10, 0, 0], segm=None)]), ["annotation(s) [4]", "non-positive size"]),
        (_coco([_ann(4, box=[500, 500, 10, 10], segm=None)]), ["annotation(s) [4]", "outside the image"]),
        (_coco([_ann(6, segm=[[1, 2, 3, 4]])]), ["annotation(s) [6]", "fewer than 3 points"]),
        (
            _coco([_ann(7, segm={"size": [10, 10], "counts": [100]})]),
            ["annotation(s) [7]", "not the image's"],
        ),
        (_coco([_ann(8, segm={"size": [80, 100], "counts": [5, 5]})]), ["annotation(s) [8]", "add up"]),
    ],
    ids=[
        "dup-image",
        "dup-ann",
        "orphan-ann",
        "zero-box",
        "box-outside",
        "polygon",
        "rle-size",
        "rle-counts",
    ],
)
def test_invalid_coco_files_are_refused_with_the_ids(data, needles):
    with pytest.raises(DatasetError) as e:
        validate_coco(data, "anns.json", "json_file")
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    assert "anns.json (json_file)" in str(e.value)


def test_repairable_coco_problems_are_handled_and_reported():
    data = _coco([
        _ann(1, box=[90, 70, 30, 30]),  # reaches outside the 100 x 80 image: clipped
        _ann(2, box=[30, 30, 0, 0]),  # zero-area box on a pixel of the object: the mask's box
        _ann(3, segm=[[1, 2, 3, 4], [10, 10, 40, 10, 40, 40]]),  # one degenerate part dropped
        _ann(4, cat=99),  # undeclared category: ignored
    ])  # fmt: skip
    notes = validate_coco(data, "anns.json", "json_file")
    anns = {a["id"]: a for a in data["annotations"]}
    assert anns[1]["bbox"] == [90.0, 70.0, 10.0, 10.0]
    assert anns[2]["bbox"] == [10.0, 10.0, 30.0, 30.0]
    assert anns[3]["segmentation"] == [[10, 10, 40, 10, 40, 40]]
    text = " | ".join(notes)
    for needle in (
        "[1] (1 in all) reach outside the image; clipped",
        "[2] (1 in all) have an unusable box",
        "fewer than 3 points dropped from annotation(s) [3]",
        "1 annotation(s) name categories",
    ):
        assert needle in text, text  # fmt: skip


def test_duplicate_image_ids_in_the_target_json_stop_test_before_writing(in_tmp, bank, synth, capsys):
    val = json.loads(open(synth["val_json"]).read())
    val["images"][1]["id"] = val["images"][0]["id"]
    js = in_tmp / "val_dup.json"
    js.write_text(json.dumps(val))
    res = in_tmp / "res.json"
    argv = [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post,
            f"{TEST_FLAG}.json_file", js, "--export_result", res]  # fmt: skip
    expect_user_error(capsys, argv, str(js), f"image id(s) [{val['images'][0]['id']}]")
    assert not res.exists()


def test_mixed_masks_in_target_ground_truth_are_refused():
    data = _coco([_ann(1), _ann(2, segm=None)])
    with pytest.raises(DatasetError, match=r"annotation\(s\) \[2\] \(1 in all\) have no mask"):
        validate_coco(data, "val.json", "json_file", role="test")
    validate_coco(_coco([_ann(1), _ann(2, segm=None)]), "train.json", "json_file")  # references: fine


def test_box_only_target_ground_truth_gives_bbox_ap_and_a_note(in_tmp, bank, synth, capsys):
    from ..conftest import run_cli

    val = json.loads(open(synth["val_json"]).read())
    for a in val["annotations"]:
        a.pop("segmentation", None)
    js = in_tmp / "val_boxes.json"
    js.write_text(json.dumps(val))
    cli = run_cli([*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post,
                   f"{TEST_FLAG}.json_file", js])  # fmt: skip
    out = capsys.readouterr().out
    assert "box-only ground truth" in out and "segm AP needs mask ground truth" in out
    assert set(cli.model.last_stats) == {"bbox"} and cli.model.last_stats["bbox"]["AP"] >= 0.9
    report = in_tmp / "results_analysis" / "coco" / "evaluation" / "per_class_ap.csv"
    header = report.read_text().splitlines()[0]
    assert "bbox_AP" in header and "segm" not in header


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_with_its_size_and_the_setting(tmp_path, monkeypatch):
    from no_time_to_train.data.images import MAX_PIXELS_ENV, load_rgb

    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 20000)).save(path)  # 600 megapixels, a few hundred kB on disk
    assert path.stat().st_size < 2_000_000
    with pytest.raises(DatasetError) as e:
        load_rgb(str(path))
    msg = str(e.value)
    assert "bomb.png" in msg and "30000x20000" in msg and MAX_PIXELS_ENV in msg
    monkeypatch.setenv(MAX_PIXELS_ENV, "10")
    small = tmp_path / "small.png"
    Image.new("RGB", (4, 4)).save(small)
    with pytest.raises(DatasetError, match="4x4"):
        load_rgb(str(small))


def test_large_legitimate_image_loads(tmp_path):
    from no_time_to_train.data.images import load_rgb

    path = tmp_path / "big.png"
    Image.fromarray(np.full((4000, 6000, 3), 90, np.uint8)).save(path)
    img = load_rgb(str(path))
    assert img.size == (6000, 4000)


# ---------------------------------------------------------------------------------------------
# outputs are checked before any network is built
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,flag", [("fill_memory", "--out_path"), ("test", "--export_result"),
                                       ("test", "--model.init_args.model_cfg.test.export_dir")])  # fmt: skip
def test_output_under_a_file_is_refused_before_the_networks_are_built(
    in_tmp, bank, mode, flag, capsys, monkeypatch
):
    from ..oracle import OracleMatcherModel

    def must_not_build(self):
        raise AssertionError("a network was built before the outputs were checked")

    monkeypatch.setattr(OracleMatcherModel, "build_encoder", must_not_build)
    (in_tmp / "blocker").write_text("a file, not a folder")
    target = in_tmp / "blocker" / "sub" / "out.json"
    argv = [*base(bank.cfg), "--model.test_mode", mode, flag, target]
    if mode == "test":
        argv += ["--ckpt_path", bank.post]
    elif flag != "--out_path":
        argv += ["--out_path", in_tmp / "m.ckpt"]
    expect_user_error(capsys, argv, flag, "is a file, not a folder")
    assert (in_tmp / "blocker").read_text() == "a file, not a folder"


# ---------------------------------------------------------------------------------------------
# the one-image command and the API
# ---------------------------------------------------------------------------------------------


def _ref_image(d: Path, name: str, size=(30, 20), mask_size=(30, 20)) -> None:
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(d / f"{name}.jpg")
    m = np.zeros((mask_size[1], mask_size[0]), np.uint8)
    m[2:8, 2:8] = 255
    Image.fromarray(m).save(d / f"{name}_mask.png")


def test_reference_folder_errors_name_the_folder_and_the_mask_file(tmp_path):
    from no_time_to_train.cli.segment_image import read_reference_folder

    refs = tmp_path / "refs"
    _ref_image(refs / "boat", "a")
    (refs / "bird").mkdir()  # a class folder without images
    with pytest.raises(DatasetError, match=r"Class folder .*refs/bird has no reference image"):
        read_reference_folder(str(refs))
    _ref_image(refs / "bird", "b", mask_size=(15, 10))
    with pytest.raises(DatasetError, match=r"Mask .*b_mask\.png is 15x10 but its image .*b\.jpg is 30x20"):
        read_reference_folder(str(refs))
    (refs / "bird" / "b_mask.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"b_mask\.png"):
        read_reference_folder(str(refs))


def test_api_refuses_a_fill_only_memory_file_like_the_cli(bank, synth):
    from no_time_to_train.errors import CheckpointError

    from ..e2e.test_api_cli_parity import _oracle_api

    seg = _oracle_api(synth)
    with pytest.raises(CheckpointError, match="needs a postprocessed memory .* written by fill_memory"):
        seg.load_memory(str(bank.mem))
    seg.load_memory(str(bank.post))  # the postprocessed one is fine
    assert seg.segmenter is not None and seg.segmenter.memory.is_postprocessed


def test_full_resolution_work_is_bounded_for_large_images(monkeypatch):
    """Upsampling proposals to a 6000 x 4000 photo holds one float mask at a time (not 32: 3 GB),
    and the soft merge's budget does not grow with the image."""
    import torch

    from no_time_to_train.models import matching

    seen = []
    real = matching.upsample_logits_to_masks

    def spy(logits, size, chunk=32):
        seen.append(logits.shape[0] * size[0] * size[1])
        return real(logits, size, chunk)

    monkeypatch.setattr(matching, "upsample_logits_to_masks", spy)
    logits = torch.full((3, 256, 256), -1.0)
    logits[:, 100:150, 60:200] = 1.0
    masks = matching.CroppedMasks.from_logits(logits, (4000, 6000))
    assert len(masks) == 3 and max(seen) <= matching.FULL_RES_FLOATS
    seen.clear()
    matching.CroppedMasks.from_logits(logits, (512, 512))
    assert seen == [3 * 512 * 512]  # small images keep their batches
    budgets = []
    monkeypatch.setattr(matching.CroppedMasks, "intersections",
                        lambda self, idx, max_floats, block=128: budgets.append(max_floats) or
                        torch.zeros(len(idx), len(idx), dtype=torch.float64))  # fmt: skip
    matching.semantic_soft_merge(
        masks, torch.ones(3), torch.zeros(3, dtype=torch.long), torch.eye(3), chunk=64
    )
    assert budgets == [64 * 1024 * 1024]
