"""CPU threads and decoder chunks chosen from what the process can use."""

from __future__ import annotations

import os

import pytest
import torch

from no_time_to_train import runtime


def test_threads_are_the_fair_share_of_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert runtime.usable_cpus() == 6
    assert runtime.cpu_threads() == 6
    assert runtime.cpu_threads(local_processes=2) == 3  # a two-process run splits the cores
    assert runtime.cpu_threads(local_processes=8) == 1
    assert runtime.cpu_threads(requested=5, local_processes=2) == 5  # compute_cfgs.num_threads wins


def test_configure_and_worker_init_set_torch_threads():
    before = torch.get_num_threads()
    try:
        assert runtime.configure_cpu_threads(requested=1) == 1 and torch.get_num_threads() == 1
        runtime.configure_cpu_threads(requested=2)
        runtime.one_thread_worker(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device,requested,expected", [("cpu", None, 32), ("cuda", None, 64), ("cpu", 7, 7)])
def test_decoder_chunk(device, requested, expected):
    assert runtime.decoder_chunk(torch.device(device), requested) == expected


def test_threads_follow_the_cpus_other_processes_leave_free(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(runtime, "competing_tasks", lambda: 0)
        assert runtime.adapt_cpu_threads(4) == 4 and torch.get_num_threads() == 4
        monkeypatch.setattr(runtime, "competing_tasks", lambda: 3)
        assert runtime.adapt_cpu_threads(4) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(runtime, "competing_tasks", lambda: 1)
        assert runtime.adapt_cpu_threads(2) == 2  # never more than the process's share
    finally:
        torch.set_num_threads(before)


def test_competing_tasks_sees_a_busy_process():
    import subprocess
    import sys
    import time

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        seen = max(runtime.competing_tasks() for _ in range(20))
    finally:
        spinner.kill()
        spinner.wait()
    assert seen >= 1
