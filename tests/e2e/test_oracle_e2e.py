"""The whole pipeline (fill -> postprocess -> test -> COCOeval) through the CLI, with oracle networks.

With features that separate the classes and proposals that include the true masks, everything
between them (crop, bank, prototypes, pooling, NMS, merge, RLE/box encoding, category-id mapping,
split filtering) must be right for AP to be high.
"""

from __future__ import annotations

import json

import torch

from ..conftest import FEWSHOT_CFG, dataset_overrides, run_cli, write_yaml


def _oracle_config(tmp_path, synth) -> str:
    colors = [list(synth["class_colors"][c]) for c in synth["category_ids"]]
    cfg = {
        "model": {
            "class_path": "tests.oracle.OracleMatcherModel",
            "init_args": {
                "class_colors": colors,
                "distractor_colors": [list(c) for c in synth["distractor_colors"]],
                "model_cfg": {"memory_bank_cfg": {"category_num": len(colors), "length": 2}},
                "dataset_cfgs": dataset_overrides(synth),
                "data_load_cfgs": {"workers": 0},
            },
        },
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "callbacks": []},
    }
    return write_yaml(tmp_path / "oracle.yaml", cfg)


def test_oracle_pipeline_reaches_high_ap(tmp_path, synth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _oracle_config(tmp_path, synth)
    base = ["test", "--config", FEWSHOT_CFG, "--config", cfg]
    mem, post, res = (
        tmp_path / "memory.ckpt",
        tmp_path / "memory_postprocessed.ckpt",
        tmp_path / "results.json",
    )
    run_cli([*base, "--model.test_mode", "fill_memory", "--out_path", mem])
    run_cli([*base, "--model.test_mode", "postprocess_memory", "--ckpt_path", mem, "--out_path", post])
    run_cli([*base, "--model.test_mode", "vis_memory", "--ckpt_path", post])
    cli = run_cli([
        *base, "--model.init_args.test_mode", "test", "--ckpt_path", post, "--export_result", res,
        "--model.init_args.model_cfg.test.online_vis", "True", "--model.init_args.model_cfg.test.vis_thr", "0.4",
    ])  # fmt: skip

    stats = cli.model.last_stats
    assert stats["bbox"]["AP"] >= 0.9, stats["bbox"]
    assert stats["segm"]["AP"] >= 0.9, stats["segm"]

    results = json.loads(res.read_text())
    assert {r["category_id"] for r in results} <= set(synth["category_ids"])
    assert all(len(r["bbox"]) == 4 and isinstance(r["segmentation"]["counts"], str) for r in results)
    # The memory files hold the bank only (no network weights) and the postprocessed one is small.
    sd = torch.load(post, map_location="cpu", weights_only=True)["state_dict"]
    assert sd and all(k.startswith("memory.") for k in sd)
    assert sd["memory.mem_fg_feats"].shape[0] == 0
    assert sd["memory.mem_postprocessed"].item()
    # vis_memory painted every reference; online_vis drew every target image
    assert len(list((tmp_path / "results_analysis" / "memory_vis" / "coco").glob("*.png"))) == 6
    assert len(list((tmp_path / "results_analysis" / "coco").glob("*.png"))) == 6
