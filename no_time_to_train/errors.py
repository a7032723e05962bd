"""Errors that describe a problem with the user's input rather than a bug in this package.

The command-line entry points print these as one paragraph (no traceback): what was wrong,
which file or flag, and how to fix it (``run_reporting_user_errors``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class UserInputError(Exception):
    """Bad input from the user: a missing file, a flag that disagrees with the data, ..."""


class CheckpointError(UserInputError):
    """A checkpoint or memory file is missing, truncated, or does not match the config."""


class ConfigError(UserInputError):
    """A configuration value is invalid or inconsistent with other values."""


class DatasetError(UserInputError):
    """An annotation file, reference pickle or image is missing or malformed."""


def lookup(table: dict[str, Any], name: str, setting: str, what: str) -> Any:
    """``table[name]``, or a ConfigError saying ``setting={name!r} is not <what>``, the close match
    and the valid names (the registries of proposers and encoders)."""
    if name in table:
        return table[name]
    import difflib

    close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise ConfigError(f"{setting}={name!r} is not {what}.{hint} Valid names: {', '.join(table)}.")


def run_reporting_user_errors(fn: Callable[..., object], *args: Any, code: int = 1, **kwargs: Any) -> int:
    """Call ``fn(*args, **kwargs)`` for a command-line ``main``: its exit status.

    0 when ``fn`` returns; ``code`` after printing ``error: <message>`` to stderr when it raises a
    ``UserInputError``. Any other exception propagates with its traceback (a bug, not bad input).
    """
    try:
        fn(*args, **kwargs)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return code
    return 0
