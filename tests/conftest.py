"""Shared fixtures: generated COCO-format data and random-weight checkpoints in official formats."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from no_time_to_train.data.synthetic import generate_coco_dataset

REPO = Path(__file__).resolve().parents[1]
FEWSHOT_CFG = REPO / "no_time_to_train" / "new_exps" / "coco_fewshot_10shot_Sam2L.yaml"
CDFSOD_CFG = REPO / "no_time_to_train" / "pl_configs" / "matching_cdfsod_template.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> dict:
    """Lossless generated dataset: 3 classes, 2 shots, 8 train / 6 val images."""
    out = tmp_path_factory.mktemp("synth")
    return generate_coco_dataset(
        out, n_train=8, n_val=6, class_names=("person", "car", "bird"), n_shot=2, seed=3, image_format="png"
    )


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict:
    """Random-weight SAM2-t and DINOv2-S checkpoints written in Meta's formats."""
    from no_time_to_train.tools.random_checkpoints import (
        write_random_encoder_checkpoint,
        write_random_sam2_checkpoint,
    )

    out = tmp_path_factory.mktemp("ckpts")
    sam2 = write_random_sam2_checkpoint("sam2_hiera_t.yaml", out / "sam2_hiera_tiny.pt", seed=0)
    dino = write_random_encoder_checkpoint("dinov2_small", out / "dinov2_vits14_pretrain.pth", seed=0)
    return {"sam2": str(sam2), "dinov2": str(dino)}


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def dataset_overrides(synth: dict, cat_names: list[str] | None = None) -> dict:
    names = cat_names or list(synth["class_names"])
    return {
        "fill_memory": {
            "root": synth["train_img_dir"], "json_file": synth["train_json"],
            "memory_pkl": synth["reference_pkl"], "cat_names": ",".join(names),
        },
        "test": {"root": synth["val_img_dir"], "json_file": synth["val_json"], "cat_names": ",".join(names)},
    }  # fmt: skip


def run_cli(argv: list[str]):
    from no_time_to_train.cli.lightning_cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def bank(tmp_path_factory, synth) -> SimpleNamespace:
    """A K = 1 bank (one reference per class), filled and postprocessed once with the oracle."""
    from .helpers import base, one_shot_pkl, oracle_yaml

    d = tmp_path_factory.mktemp("bank")
    pkl = one_shot_pkl(synth, d / "refs_1shot.pkl")
    data = dataset_overrides(synth)
    data["fill_memory"]["memory_pkl"] = pkl
    cfg = oracle_yaml(
        d / "oracle_k1.yaml", synth, model_cfg={"memory_bank_cfg": {"length": 1}}, dataset_cfgs=data
    )
    mem, post = d / "memory.ckpt", d / "memory_postprocessed.ckpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        run_cli([*base(cfg), "--model.test_mode", "fill_memory", "--out_path", mem])
        run_cli(
            [*base(cfg), "--model.test_mode", "postprocess_memory", "--ckpt_path", mem, "--out_path", post]
        )
    return SimpleNamespace(dir=d, cfg=cfg, pkl=pkl, mem=mem, post=post)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path
