"""The code's structure as a contract: one table of modes, plug-in registries for proposers and
encoder families, one validation entry point, and docstrings that name modules that exist."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import get_args

import pytest

from no_time_to_train.cli.modes import MODES
from no_time_to_train.config import DatasetCfgs, ModelCfg, TestMode
from no_time_to_train.errors import ConfigError
from no_time_to_train.proposers import PROPOSERS, ProposerPlugin, proposer_plugin, register_proposer
from no_time_to_train.validation import validate

PACKAGE = Path(__file__).resolve().parents[2] / "no_time_to_train"


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "new_exps" not in p.parts)


def test_every_test_mode_is_one_entry_of_the_table():
    assert set(get_args(TestMode)) - {"none"} == set(MODES)
    for name, mode in MODES.items():
        assert mode.name == name
        assert not (mode.writes_memory and mode.data in ("targets", "support")), name


def _mode_patterns() -> list[str]:
    names = "|".join(re.escape(n) for n in MODES)
    quoted = rf"[\"'](?:{names})[\"']"
    return [
        rf"mode[\w.]*\s*(?:==|!=)\s*{quoted}",  # mode == "test", self.test_mode != "vis_memory"
        rf"{quoted}\s*(?:==|!=)\s*[\w.]*mode",  # "test" == mode
        rf"mode[\w.]*\s+(?:not\s+)?in\s*[\(\[\{{][^)\]\}}]*{quoted}",  # mode in ("fill_memory", ...)
        rf"[\(\[\{{]\s*{quoted}\s*,\s*{quoted}",  # MEMORY_MODES = ("fill_memory", "postprocess_memory")
    ]


def test_no_mode_name_is_compared_outside_the_table():
    patterns, found = _mode_patterns(), []
    for path in _sources():
        if path.name == "modes.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(p, line) for p in patterns):
                found.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_mode_scan_catches_the_old_forms():
    """The scan above is not vacuous: each form the CLI used to dispatch with is flagged."""
    old = [
        'if self.test_mode == "fill_memory" and self.memory.is_filled:',
        'elif mode in ("test", "test_support"):',
        'MEMORY_MODES = ("fill_memory", "postprocess_memory", "fill_memory_neg", "postprocess_memory_neg")',
        'needs_proposer = self.test_mode in ("test", "test_support")',
    ]
    assert all(any(re.search(p, line) for p in _mode_patterns()) for line in old)
    assert not any(re.search(p, 'if stage != "test":') for p in _mode_patterns())  # Lightning's stage


# A dotted path inside ``double backticks`` or a :mod:/:func:/:class:/:data: role whose first
# part is one of the package's modules (or the package itself).
_TOP = sorted({p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith("_")})
_REF = re.compile(
    r"(?:``|:(?:mod|func|class|data|meth|attr):`~?)"
    rf"((?:no_time_to_train\.)?(?:{'|'.join(re.escape(t.removesuffix('.py')) for t in _TOP)})(?:\.[A-Za-z_]\w*)+)"
    r"(?:\(\))?(?:``|`)"
)


def _docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append(doc)
        # Attribute docstrings: a string statement right after an assignment.
        if isinstance(node, (ast.Module, ast.ClassDef)):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    out.append(stmt.value.value)
    return out


def _resolves(dotted: str) -> bool:
    parts = dotted.removeprefix("no_time_to_train.").split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("no_time_to_train." + ".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_module_path_named_in_a_docstring_exists():
    refs = {(m, path) for path in _sources() for doc in _docstrings(path) for m in _REF.findall(doc)}
    assert len(refs) > 30  # the scan sees the references (a broken pattern would find none)
    broken = sorted(f"{p.relative_to(PACKAGE)}: {m}" for m, p in refs if not _resolves(m))
    assert not broken, "\n".join(broken)


def test_a_stale_reference_would_be_caught():
    assert _REF.findall("see ``models.sam2_decoder`` and :func:`~no_time_to_train.api.default_device`") == [
        "models.sam2_decoder",
        "no_time_to_train.api.default_device",
    ]
    assert not _resolves("models.sam2_decoder") and _resolves("no_time_to_train.api.default_device")


# ---------------------------------------------------------------------- proposers
def test_the_default_proposer_is_sam2_and_unknown_names_are_refused():
    assert ModelCfg().proposer == "sam2" and "sam2" in PROPOSERS
    cfg = ModelCfg(proposer="sam22")
    with pytest.raises(
        ConfigError, match=r"model_cfg.proposer='sam22' is not a registered proposer. Did you mean `sam2`"
    ):
        validate(cfg)


def test_a_registered_proposer_sets_the_target_input_size():
    class Dummy:
        image_size = 512

    register_proposer(ProposerPlugin("dummy_512", build=lambda cfg: Dummy(), input_size=lambda cfg: 512))
    try:
        cfg, data = ModelCfg(proposer="dummy_512"), DatasetCfgs()
        with pytest.raises(ConfigError, match=r"the proposer \(dummy_512\) takes 512 x 512 inputs"):
            validate(cfg, data, MODES["test"])
        data.test.image_size = 512
        assert validate(cfg, data, MODES["test"]) == []
        assert proposer_plugin("dummy_512").build(cfg).image_size == 512
    finally:
        del PROPOSERS["dummy_512"]


def test_the_proposer_checkpoint_check_is_the_plugins(tmp_path):
    """check_checkpoints asks the selected proposer's plug-in, in the caller's words."""
    from no_time_to_train.checkpoints.preflight import check_checkpoints
    from no_time_to_train.errors import CheckpointError

    cfg = ModelCfg(sam2_ckpt_path=str(tmp_path / "none.pt"), encoder_ckpt_path=None)
    with pytest.raises(CheckpointError, match=r"SAM2 checkpoint .*none.pt \(--sam2-ckpt\) not found"):
        check_checkpoints(cfg, style="segment_image")
    register_proposer(ProposerPlugin("free", build=lambda cfg: None, input_size=lambda cfg: 1024))
    try:
        cfg.proposer = "free"  # a proposer without checkpoint settings: nothing to report
        check_checkpoints(cfg, style="segment_image")
    finally:
        del PROPOSERS["free"]


def test_the_oracle_proposer_comes_from_the_public_registry():
    from .. import oracle

    assert PROPOSERS["color_oracle"].build(ModelCfg(proposer_args={"colors": [[1, 2, 3]]})).colors.shape == (
        1,
        3,
    )
    assert "build_proposer" not in vars(oracle.OracleMatcherModel)


def test_the_sam2_stand_in_is_written_by_its_plugin_and_loads_strictly(tmp_path):
    from no_time_to_train.checkpoints.loading import build_sam2

    written = PROPOSERS["sam2"].write_stand_in(ModelCfg(sam2_cfg_file="sam2_hiera_t.yaml"), tmp_path, 0)
    assert written == {"sam2_ckpt_path": str(tmp_path / "sam2_hiera_tiny.pt")}
    build_sam2("sam2_hiera_t.yaml", written["sam2_ckpt_path"])  # strict: every key and shape
