"""Small file helpers: atomic writes (an interrupted run never leaves a half-written file) and
the one weights-only `torch.load` of weights and memory files."""

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


def check_output_path(path: str | os.PathLike, flag: str, is_dir: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: ``path`` (a file, or a folder
    with ``is_dir``) must be creatable and writable. Raises UserInputError naming ``flag``."""
    from no_time_to_train.errors import UserInputError

    p = Path(path)
    kind = "folder" if is_dir else "file"
    if p.exists():
        if is_dir != p.is_dir():
            what = "a folder" if p.is_dir() else "a file"
            raise UserInputError(f"{flag} {path}: the output {kind} would replace {what}. Pass another path.")
        target = p if is_dir else p.parent
    else:
        target = p.parent if str(p.parent) else Path(".")
        while not target.exists():
            target = target.parent
        if not target.is_dir():
            raise UserInputError(
                f"{flag} {path}: cannot create it, because {target} is a file, not a folder. Pass another path."
            )
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserInputError(f"{flag} {path}: {target} is not writable. Pass a path in a writable folder.")


def safe_relative_parts(file_name: str) -> list[str]:
    """The components of ``file_name`` as a relative path that stays inside an output folder
    (``..``, ``.`` and empty components dropped, both separators accepted)."""
    return [p for p in str(file_name).replace("\\", "/").split("/") if p not in ("", ".", "..")]


def load_tensors(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load`` of a weights file or memory file: on the CPU, plain tensors and types only
    (``weights_only=True``). ``mmap=True`` maps tensor data instead of reading it (cheap for
    checking a large file), falling back to a full read for legacy (non-zip) files, which cannot
    be mapped. Raises what torch raises; callers say what the file is."""
    import torch

    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            pass
    return torch.load(path, map_location="cpu", weights_only=True)
