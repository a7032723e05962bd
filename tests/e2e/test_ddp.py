"""Two CPU processes (gloo DDP) give the same memory bank and the same results as one.

Odd counts on purpose (3 references, 5 images): the distributed sampler pads them by repeating
items, which must not duplicate references or detections. The trainer settings are the shipped
config's (CSVLogger, progress bar), so every mode must end cleanly with the loggers on, as a user
runs it, and write the per-class report once.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from no_time_to_train.data.reference_sets import load_reference_pkl

from ..conftest import FEWSHOT_CFG, REPO, dataset_overrides, write_yaml


def _run(args: list[str], cwd) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_lightening.py"), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path, synth):
    # 1 shot per class (3 references) and 5 target images.
    refs = load_reference_pkl(synth["reference_pkl"])
    pkl = tmp_path / "refs_1shot.pkl"
    pkl.write_bytes(pickle.dumps({c: v[:1] for c, v in refs.items()}))
    val = json.loads(open(synth["val_json"]).read())
    keep = sorted(i["id"] for i in val["images"])[:5]
    val["images"] = [i for i in val["images"] if i["id"] in keep]
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] in keep]
    val_json = tmp_path / "val5.json"
    val_json.write_text(json.dumps(val))

    data = dataset_overrides(synth)
    data["fill_memory"]["memory_pkl"] = str(pkl)
    data["test"]["json_file"] = str(val_json)
    colors = [list(synth["class_colors"][c]) for c in synth["category_ids"]]
    cfg = write_yaml(tmp_path / "oracle.yaml", {
        "model": {"class_path": "tests.oracle.OracleMatcherModel", "init_args": {
            "class_colors": colors, "distractor_colors": [list(c) for c in synth["distractor_colors"]],
            "model_cfg": {"memory_bank_cfg": {"category_num": 3, "length": 1}},
            "dataset_cfgs": data, "data_load_cfgs": {"workers": 0}}},
        "trainer": {"accelerator": "cpu"},
    })  # fmt: skip

    outs = {}
    for n in (1, 2):
        d = tmp_path / f"dev{n}"
        d.mkdir()
        base = ["test", "--config", FEWSHOT_CFG, "--config", cfg, "--trainer.devices", n]
        if n > 1:
            base += ["--trainer.strategy", "ddp"]
        _run([*base, "--model.test_mode", "fill_memory", "--out_path", d / "mem.ckpt"], d)
        _run([*base, "--model.test_mode", "postprocess_memory", "--ckpt_path", d / "mem.ckpt",
              "--out_path", d / "post.ckpt"], d)  # fmt: skip
        _run([*base, "--model.test_mode", "vis_memory", "--ckpt_path", d / "post.ckpt"], d)
        _run([*base, "--model.test_mode", "test", "--ckpt_path", d / "post.ckpt",
              "--export_result", d / "res.json"], d)  # fmt: skip
        reports = list(d.rglob("per_class_ap.csv"))
        assert len(reports) == 1 and "work_dirs" in str(reports[0]), reports  # once, next to the logs
        assert len(list((d / "results_analysis" / "memory_vis" / "coco").glob("*.png"))) == 3
        outs[n] = (
            torch.load(d / "mem.ckpt", weights_only=True)["state_dict"],
            json.loads((d / "res.json").read_text()),
        )

    (bank1, res1), (bank2, res2) = outs[1], outs[2]
    assert bank1.keys() == bank2.keys()
    assert torch.equal(bank1["memory.mem_fill_counts"], bank2["memory.mem_fill_counts"])
    assert bank1["memory.mem_fill_counts"].tolist() == [1, 1, 1]
    assert torch.equal(bank1["memory.mem_fg_slots"], bank2["memory.mem_fg_slots"])
    for k in bank1:
        assert torch.allclose(bank1[k].float(), bank2[k].float(), atol=1e-3), k
    assert len(res1) == len(res2) > 0
    assert [r["image_id"] for r in res1] == [r["image_id"] for r in res2]  # dataset order, no duplicates
    for a, b in zip(res1, res2, strict=True):
        assert a["category_id"] == b["category_id"] and a["segmentation"] == b["segmentation"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
