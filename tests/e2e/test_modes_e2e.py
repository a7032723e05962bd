"""Modes driven by their table entries, with the oracle networks: what each writes, the memory
file's class names across steps, the support set's own names in its messages, and the Python API's
config reading (three defects that each failed before their fix)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from no_time_to_train.pipeline import memory_io

from ..conftest import dataset_overrides, run_cli, write_yaml
from ..helpers import base, expect_user_error, oracle_yaml


def test_a_postprocessed_memory_file_keeps_the_class_names(bank, synth):
    """postprocess_memory writes the names fill_memory recorded, so `segment_image --memory` needs
    no --classes for a file made by the CLI."""
    names = list(synth["class_names"])
    assert memory_io.read(str(bank.mem))[memory_io.META_KEY]["class_names"] == names
    post = memory_io.read(str(bank.post))[memory_io.META_KEY]
    assert post["postprocessed"] and post["class_names"] == names


def test_a_memory_file_made_by_the_cli_opens_without_classes(bank, synth, tmp_path):
    from no_time_to_train.api import FewShotSegmenter

    from ..oracle import GREYS, ColorEncoder, ColorProposer

    colors = [tuple(synth["class_colors"][c]) for c in synth["category_ids"]]
    distract = [tuple(c) for c in synth["distractor_colors"]]
    names = memory_io.read(str(bank.post))[memory_io.META_KEY]["class_names"]
    seg = FewShotSegmenter(names, device="cpu", encoder=ColorEncoder(colors + distract + GREYS),
                           proposer=ColorProposer(colors + distract))  # fmt: skip
    seg.load_memory(str(bank.post))
    assert seg.class_names == list(synth["class_names"])


def test_test_support_names_the_support_set_in_its_messages(bank, synth, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = dataset_overrides(synth)
    # The support set selects two of the bank's three classes.
    data["support"] = {"root": synth["train_img_dir"], "json_file": synth["train_json"],
                       "cat_names": ",".join(list(synth["class_names"])[:2])}  # fmt: skip
    cfg = oracle_yaml(
        tmp_path / "support.yaml", synth, model_cfg={"memory_bank_cfg": {"length": 1}}, dataset_cfgs=data
    )
    msg = expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "test_support", "--ckpt_path", bank.post],
        "dataset_cfgs.support selects",
    )
    assert "dataset_cfgs.test" not in msg


def test_test_support_evaluates_against_the_support_json(bank, synth, tmp_path, monkeypatch, capsys):
    """Its notes name dataset_cfgs.support's json (here one without ground truth)."""
    monkeypatch.chdir(tmp_path)
    js = json.loads(open(synth["train_json"]).read())
    js["annotations"] = []
    empty = tmp_path / "support_no_gt.json"
    empty.write_text(json.dumps(js))
    data = dataset_overrides(synth)
    data["support"] = {"root": synth["train_img_dir"], "json_file": str(empty)}
    cfg = oracle_yaml(
        tmp_path / "support.yaml", synth, model_cfg={"memory_bank_cfg": {"length": 1}}, dataset_cfgs=data
    )
    capsys.readouterr()
    run_cli([*base(cfg), "--model.test_mode", "test_support", "--ckpt_path", bank.post,
             "--out_support_res", tmp_path / "support_res.json"])  # fmt: skip
    out = capsys.readouterr().out
    assert f"{empty} (dataset_cfgs.support.json_file) has no ground-truth annotations" in out
    assert (tmp_path / "support_res.json").is_file()


def test_from_config_reads_the_reference_crop_context(tmp_path, tiny_ckpts):
    from no_time_to_train.api import FewShotSegmenter

    cfg = {"model": {"init_args": {
        "model_cfg": {"sam2_cfg_file": "sam2_hiera_t.yaml", "sam2_ckpt_path": tiny_ckpts["sam2"],
                      "encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": tiny_ckpts["dinov2"]},
        "dataset_cfgs": {"fill_memory": {"context_ratio": 0.5}}}}}  # fmt: skip
    seg = FewShotSegmenter.from_config(write_yaml(tmp_path / "c.yaml", cfg), ["thing"], device="cpu")
    assert seg.context_ratio == 0.5
    # The crop is the one fill_memory makes with that context: a different crop than with 0.2.
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 200
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    seg.progress = False
    seg.add_reference(img, "thing", masks=mask)
    half = seg._refs[0].weights.clone()
    seg.context_ratio, seg._refs = 0.2, []
    seg.add_reference(img, "thing", masks=mask)
    # More context: the object covers fewer patches of the crop.
    assert half.sum() < seg._refs[0].weights.sum()
    bad = write_yaml(
        tmp_path / "bad.yaml",
        {"model": {"init_args": {"dataset_cfgs": {"fill_memory": {"context_ratio": "x"}}}}},
    )
    from no_time_to_train.errors import UserInputError

    with pytest.raises(UserInputError, match="context_ratio must be a number"):
        FewShotSegmenter.from_config(bad, ["thing"], device="cpu")
