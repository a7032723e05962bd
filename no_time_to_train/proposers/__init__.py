"""Class-agnostic mask proposers as plug-ins, selected by ``model_cfg.proposer`` (default ``sam2``).

A plug-in is one :class:`ProposerPlugin` registered under a name: how to build the proposer from a
``ModelCfg`` (the module follows :mod:`no_time_to_train.models.proposals`), the input side it takes,
the check of its checkpoint settings run before any network is built, the random-weight stand-in
it writes for offline runs, and (optionally) a box-prompt segmenter for references given as boxes.

Adding a proposer: one module in this package that defines the plug-in and calls
:func:`register_proposer`, and its name in :data:`BUILT_IN` at the bottom of this file (code outside
the package registers its own proposer the same way, as the tests' oracle does).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from no_time_to_train.errors import lookup

if TYPE_CHECKING:
    from no_time_to_train.config import ModelCfg
    from no_time_to_train.models.box_prompt import BoxPromptSegmenter


def _no_problem(cfg: ModelCfg, flags: Mapping[str, str]) -> str | None:
    return None


@dataclass(frozen=True)
class ProposerPlugin:
    """One proposer of ``model_cfg.proposer``."""

    name: str
    build: Callable[[ModelCfg], nn.Module]
    """The proposer for a configuration, built on the CPU (callers move it to their device)."""
    input_size: Callable[[ModelCfg], int]
    """Side of the square input it takes; ``dataset_cfgs.test.image_size`` must equal it."""
    checkpoint_problem: Callable[[ModelCfg, Mapping[str, str]], str | None] = _no_problem
    """A one-sentence problem of its checkpoint settings (None: fine), with the caller's flag
    names (``checkpoints.preflight.FLAGS``); read before any network is built."""
    write_stand_in: Callable[[ModelCfg, Path, int], dict[str, str]] | None = None
    """Write random-weight checkpoints in the official format under a folder (seeded); returns the
    ``ModelCfg`` keys to set to use them."""
    box_segmenter: Callable[[nn.Module], BoxPromptSegmenter | None] | None = None
    """A box-prompt segmenter sharing the built proposer's weights (references given as boxes)."""
    summary: str = ""


PROPOSERS: dict[str, ProposerPlugin] = {}


def register_proposer(plugin: ProposerPlugin) -> ProposerPlugin:
    """Make ``plugin`` selectable as ``model_cfg.proposer: <plugin.name>`` (replaces a plug-in of
    the same name)."""
    PROPOSERS[plugin.name] = plugin
    return plugin


def proposer_plugin(name: str) -> ProposerPlugin:
    """The registered plug-in ``name``; ConfigError naming the close match and the choices."""
    return lookup(PROPOSERS, name, "model_cfg.proposer", "a registered proposer")


def build_proposer(cfg: ModelCfg) -> nn.Module:
    """The proposer ``cfg.proposer`` names, built from ``cfg``."""
    return proposer_plugin(cfg.proposer).build(cfg)


def proposer_input_size(cfg: ModelCfg) -> int:
    return int(proposer_plugin(cfg.proposer).input_size(cfg))


def plugin_args(cfg: ModelCfg) -> dict[str, Any]:
    """``model_cfg.proposer_args``: keyword options for the selected plug-in (empty by default)."""
    return dict(cfg.proposer_args or {})


BUILT_IN = ("sam2",)
"""The proposers shipped here."""

# Each import registers one proposer.
for _module in BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")
