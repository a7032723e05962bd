"""CPU threads and work sizes chosen from what the process can actually use.

A CPU process gets ``usable_cpus() // local processes`` intra-op threads (its CPU affinity, split
between the processes of a multi-process run on one machine, instead of each taking every core),
unless ``model_cfg.compute_cfgs.num_threads`` says otherwise. DataLoader workers get one thread
each: they decode images, and must not compete with the compute threads.
"""

from __future__ import annotations

import os

import torch


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_threads(requested: int | None = None, local_processes: int = 1) -> int:
    """``requested`` if given, else this process's fair share of the usable CPUs."""
    if requested:
        return int(requested)
    return max(1, usable_cpus() // max(1, int(local_processes)))


def configure_cpu_threads(requested: int | None = None, local_processes: int = 1) -> int:
    """Set torch's intra-op threads to :func:`cpu_threads` and return the number."""
    n = cpu_threads(requested, local_processes)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def competing_tasks() -> int:
    """Tasks of other processes running right now (``procs_running`` of ``/proc/stat`` less this
    process's running threads); 0 where ``/proc`` is not available."""
    try:
        with open("/proc/stat") as f:
            running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:
                continue
        return max(0, running - max(own, 1))
    except (OSError, StopIteration, ValueError):
        return 0


def adapt_cpu_threads(share: int) -> int:
    """Threads for the next image: at most ``share`` (this process's fair share), and no more than
    the CPUs other processes leave free right now. A thread that the scheduler takes away stalls
    every parallel operation of the others (thousands per image), so a busy machine is better
    served by fewer threads. Results depend on the number of threads only by float rounding (BLAS
    may sum in another order: about one ulp); fix ``compute_cfgs.num_threads`` for bitwise repeats."""
    n = max(1, min(share, usable_cpus() - competing_tasks()))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def one_thread_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the DataLoaders: decoding workers use one thread each."""
    torch.set_num_threads(1)


DECODER_CHUNK_CPU = 32
"""Prompts per pass of the fast decoder on CPU. Each pass is a few dozen operations; 32 prompts make
each large enough (tens of ms) that synchronising the threads costs little, also when another
process competes for the cores (with 4, a descheduled thread stalls thousands of tiny
operations); larger chunks only add memory."""
DECODER_CHUNK_GPU = 64


def decoder_chunk(device: torch.device, requested: int | None = None) -> int:
    return int(requested) if requested else (DECODER_CHUNK_GPU if device.type != "cpu" else DECODER_CHUNK_CPU)
