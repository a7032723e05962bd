"""Small file helpers: atomic writes so that an interrupted run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and any previous ``path`` is left intact.
    Parent folders are created as needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_json(obj: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, **kwargs)


def atomic_save_pickle(obj: Any, path: str | os.PathLike) -> None:
    with atomic_open(path, "wb") as f:
        pickle.dump(obj, f)
