"""Helpers shared by the error-path tests: oracle run configs, CLI runs that must fail cleanly."""

from __future__ import annotations

import copy
import json
import math
import pickle
from pathlib import Path

import pytest

from no_time_to_train.data.reference_sets import load_reference_pkl

from .conftest import FEWSHOT_CFG, dataset_overrides, run_cli, write_yaml

ORACLE = "tests.oracle.OracleMatcherModel"
REAL_MODEL = "no_time_to_train.pl_wrapper.sam2matcher_pl.Sam2MatcherLightningModel"
BANK_FLAG = "--model.init_args.model_cfg.memory_bank_cfg"
FILL_FLAG = "--model.init_args.dataset_cfgs.fill_memory"
TEST_FLAG = "--model.init_args.dataset_cfgs.test"


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def oracle_yaml(path: Path, synth: dict, class_path: str = ORACLE, **init_args) -> str:
    """A run config with the oracle networks on ``synth`` (3 classes); ``init_args`` are merged in."""
    colors = [list(synth["class_colors"][c]) for c in synth["category_ids"]]
    args = {
        "model_cfg": {"memory_bank_cfg": {"category_num": len(colors), "length": 2}},
        "dataset_cfgs": dataset_overrides(synth),
        "data_load_cfgs": {"workers": 0},
    }
    if class_path != REAL_MODEL:
        args["class_colors"] = colors
        args["distractor_colors"] = [list(c) for c in synth["distractor_colors"]]
    cfg = {
        "model": {"class_path": class_path, "init_args": _merge(args, init_args)},
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "callbacks": []},
    }
    return write_yaml(path, cfg)


def base(cfg: str) -> list:
    return ["test", "--config", FEWSHOT_CFG, "--config", cfg]


def expect_user_error(capsys, argv: list, *needles: str) -> str:
    """Run the CLI; assert exit code 2 and a one-paragraph message containing ``needles``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "error: " in err, err
    msg = err[err.index("error: ") :].strip()
    assert "\n" not in msg, msg  # one paragraph
    for needle in needles:
        assert needle in msg, f"{needle!r} not in: {msg}"
    return msg


def write_json(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def one_shot_pkl(synth: dict, path: Path) -> str:
    refs = load_reference_pkl(synth["reference_pkl"])
    path.write_bytes(pickle.dumps({c: v[:1] for c, v in refs.items()}))
    return str(path)


def results_ok(path: Path) -> list[dict]:
    results = json.loads(path.read_text())
    assert all(math.isfinite(r["score"]) and 0 <= r["score"] <= 1 + 1e-6 for r in results)
    return results
