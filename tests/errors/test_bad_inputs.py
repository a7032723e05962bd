"""Bad inputs, one test per case: target sets without detections, atomic writes, several processes
(conventions: ``tests/errors/__init__.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from no_time_to_train.data.datasets import COCORefTestDataset
from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.io_utils import atomic_save_json
from no_time_to_train.output.exports import export_prediction

from ..conftest import REPO, run_cli
from ..helpers import (
    BANK_FLAG,
    FILL_FLAG,
    TEST_FLAG,
    base,
    expect_user_error,
    oracle_yaml,
    results_ok,
    write_json,
)

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
    cfg = oracle_yaml(in_tmp / "c.yaml", synth, class_path="tests.oracle.NoMaskModel",
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
    img_id = load_reference_pkl(synth["reference_pkl"])[synth["category_ids"][0]][1][
        "img_id"
    ]  # dataset index 1 -> rank 1
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

    data = json.loads(open(synth["val_json"]).read())
    bird = next(c for c in data["categories"] if c["name"] == "bird")
    data["categories"] = [bird]
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(data))
    ds = COCORefTestDataset(synth["val_img_dir"], str(path), cat_names=["bird"])
    assert {a["category_id"] for a in ds.coco.dataset["annotations"]} == {bird["id"]}
    for img_id in ds.img_ids:
        assert set(ds.gt_by_image(img_id)) <= {0}
