"""SIGTERM / SIGINT in the middle of a run: status 143 / 130, previous outputs byte-identical, no
temporary file, no process left behind (DataLoader workers, DDP children)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO, dataset_overrides
from ..helpers import base, oracle_yaml

SLOW = "tests.oracle.SlowOracleMatcherModel"


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's bookkeeping is left


def _interrupt(argv: list, cwd: Path, sig: int, expect_children: int) -> tuple[int, str, set[int]]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run_lightening.py"), *map(str, argv)], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (cwd / "started").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(0.5)
        kids = _descendants(proc.pid)
        assert len(kids) >= expect_children, kids
        proc.send_signal(sig)  # to the main process only, as `kill PID` does
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)
    return proc.returncode, err, {k for k in kids if _alive(k)}


def _slow_config(tmp_path: Path, synth: dict, bank, workers: int) -> str:
    data = dataset_overrides(synth)
    data["fill_memory"]["memory_pkl"] = bank.pkl
    return oracle_yaml(tmp_path / "slow.yaml", synth, class_path=SLOW, dataset_cfgs=data,
                       model_cfg={"memory_bank_cfg": {"length": 1}}, data_load_cfgs={"workers": workers})  # fmt: skip


def _no_temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig,mode,workers", [(signal.SIGTERM, "test", 2), (signal.SIGINT, "fill_memory", 0)],
                         ids=["sigterm-test-with-workers", "sigint-fill"])  # fmt: skip
def test_signal_mid_run(tmp_path, synth, bank, sig, mode, workers):
    cfg = _slow_config(tmp_path, synth, bank, workers)
    previous = tmp_path / "previous_output"
    previous.write_bytes(b"results of an earlier run")
    argv = [*base(cfg), "--model.test_mode", mode]
    argv += (
        ["--ckpt_path", bank.post, "--export_result", previous]
        if mode == "test"
        else ["--out_path", previous]
    )
    status, err, left = _interrupt(argv, tmp_path, sig, expect_children=workers)
    assert status == 128 + sig, err[-3000:]
    assert "Traceback" not in err and signal.Signals(sig).name in err, err[-3000:]
    assert previous.read_bytes() == b"results of an earlier run"
    assert _no_temporary_files(tmp_path) == [] and not left


@pytest.mark.slow
def test_sigterm_to_the_first_process_of_a_ddp_run(tmp_path, synth, bank):
    cfg = _slow_config(tmp_path, synth, bank, 0)
    previous = tmp_path / "res.json"
    previous.write_bytes(b"[]")
    argv = [*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_result", previous,
            "--trainer.devices", 2, "--trainer.strategy", "ddp"]  # fmt: skip
    status, err, left = _interrupt(argv, tmp_path, signal.SIGTERM, expect_children=1)
    assert status == 143, err[-3000:]
    assert previous.read_bytes() == b"[]" and _no_temporary_files(tmp_path) == []
    assert not left, f"processes left behind: {left}"
