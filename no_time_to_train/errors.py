"""Errors that describe a problem with the user's input rather than a bug in this package.

The command-line entry points print these as one paragraph (no traceback): what was wrong,
which file or flag, and how to fix it.
"""


class UserInputError(Exception):
    """Bad input from the user: a missing file, a flag that disagrees with the data, ..."""


class CheckpointError(UserInputError):
    """A checkpoint or memory file is missing, truncated, or does not match the config."""


class ConfigError(UserInputError):
    """A configuration value is invalid or inconsistent with other values."""


class DatasetError(UserInputError):
    """An annotation file, reference pickle or image is missing or malformed."""
