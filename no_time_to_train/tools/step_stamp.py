"""A fingerprint of one pipeline step's inputs, for re-runs that reuse finished steps.

``python -m no_time_to_train.tools.step_stamp [--exclude OUTPUT] -- ARG...`` prints the SHA-256 of
the arguments and of the size and modification time (ns) of every existing file among them (the
step's configs, data, reference set and checkpoints). The step's own output is excluded: it
exists on a re-run but is not an input.
"""

from __future__ import annotations

import argparse
import hashlib
import os


def stamp(args: list[str], exclude: set[str] = frozenset()) -> str:
    h = hashlib.sha256()
    for arg in args:
        h.update(arg.encode() + b"\0")
        if arg not in exclude and os.path.isfile(arg):
            st = os.stat(arg)
            h.update(f"{st.st_size} {st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exclude", action="append", default=[], help="a path that is not an input")
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    print(stamp(args, set(ns.exclude)))


if __name__ == "__main__":
    main()
