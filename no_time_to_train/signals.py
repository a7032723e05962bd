"""SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl+C) end a run with status 143 / 130.

Lightning's own SIGTERM handling lets the run go on and end with status 0 (and, in a multi-process
run, calls a collective from inside the signal handler). Here a signal raises ``Interrupted``, a
``KeyboardInterrupt``, so Lightning's interrupt path tears the run down (and kills the processes it
launched); ``cli.main`` then exits with ``128 + signal``. Outputs are written atomically
(``io_utils.atomic_open``), so an interrupted run leaves previous files byte-identical and no
temporary file.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def exit_status() -> int | None:
    return 128 + _received[0] if _received else None


def install(trainer: Any = None) -> dict:
    """Handle SIGTERM / SIGINT in this process (main thread only). With a ``trainer`` whose
    launcher started the other processes of a multi-process run, forward the signal to them
    first, so that none is left behind waiting in a collective. Returns the replaced handlers."""

    owner = os.getpid()  # forked DataLoader workers inherit the handler; only the owner forwards

    def handler(signum: int, frame: Any) -> None:
        first = not _received
        _received.append(signum)
        launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
        if first and os.getpid() == owner and launcher is not None and hasattr(launcher, "kill"):
            launcher.kill(signum)
        if first:
            raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, handler)
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers ``install`` replaced (for callers that run the CLI in-process)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def status_of_lost_worker(exc: BaseException) -> int | None:
    """``128 + signal`` when ``exc`` reports a DataLoader worker ended by SIGTERM / SIGINT (the
    signal reached the worker before this process), else None."""
    m = re.search(r"killed by signal: (Terminated|Interrupt)", str(exc))
    if not m:
        return None
    return 128 + (signal.SIGTERM if m.group(1) == "Terminated" else signal.SIGINT)
