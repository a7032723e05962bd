"""Short messages for configuration errors: the unknown key or bad value, the valid choices and
the closest match, instead of jsonargparse's usage dump and Union-subtype report."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing

from no_time_to_train.config import DataLoadCfgs, DatasetCfgs, ModelCfg

MODEL = "--model.init_args."
_ROOTS = {"model_cfg": ModelCfg, "dataset_cfgs": DatasetCfgs, "data_load_cfgs": DataLoadCfgs}


def _fields_at(path: list[str]) -> list[str] | None:
    """Field names of the dataclass at ``path`` (e.g. ["model_cfg", "sam2_infer_cfgs"])."""
    if not path:
        return [*_ROOTS, "test_mode"]
    cls = _ROOTS.get(path[0])
    for part in path[1:]:
        if cls is None:
            return None
        hints = typing.get_type_hints(cls)
        cls = hints.get(part) if dataclasses.is_dataclass(hints.get(part)) else None
    return [f.name for f in dataclasses.fields(cls)] if cls is not None else None


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" Did you mean `{close[0]}`?" if close else ""


def _unknown_key(message: str) -> str | None:
    m = re.search(r"unrecognized arguments: --([\w.]+)(?:=(\S*))?", message)
    if not m:
        return None
    key = m.group(1)
    inside_model = "Problem with given class_path" in message
    flag = (MODEL if inside_model else "--") + key
    parts = key.split(".")
    fields = _fields_at(parts[:-1]) if inside_model else None
    if fields is None:
        return f"Unknown option {flag}. Run `python run_lightening.py test --help` for the options."
    where = ".".join(parts[:-1]) or "model"
    return (
        f"Unknown option {flag}: `{parts[-1]}` is not a key of {where}.{_suggest(parts[-1], fields)} "
        f"Valid keys there: {', '.join(fields)}."
    )


def _bad_choice(message: str) -> str | None:
    m = re.search(r"Expected a typing\.Literal\[(.*?)\]\. Got value: (\S+)", message)
    if not m:
        return None
    choices = re.findall(r"'([^']*)'", m.group(1))
    key = re.search(r"NestedArg\(key='([\w.]+)'", message)
    flag = MODEL + key.group(1) if key else "the option"
    if key and key.group(1) == "test_mode":
        flag = "--model.test_mode"
    return f"{flag} {m.group(2)}: not one of {', '.join(choices)}.{_suggest(m.group(2), choices)}"


def _bad_type(message: str) -> str | None:
    m = re.search(
        r"Parser key \"([\w.]+)\":\s*\n?\s*(Expected a <class '(\w+)'>\. Got value: (\S+))", message
    )
    if not m:
        return None
    key = m.group(1)
    flag = (MODEL if key.split(".")[0] in _ROOTS else "--") + key
    return f"{flag} {m.group(4)}: expected a {m.group(3)}."


def _other_subcommand(message: str) -> str | None:
    m = re.search(r"argument subcommand: invalid choice: '([^']*)'", message)
    if not m:
        return None
    return (
        f"`{m.group(1)}` is not a subcommand here: the method trains nothing, so `test` is the only one "
        "(it runs every step, chosen by --model.test_mode fill_memory | postprocess_memory | vis_memory | test). "
        "Run `python run_lightening.py test --help` for the options."
    )


def condense(message: str) -> str:
    """One short paragraph for a jsonargparse error ``message``."""
    for rule in (_other_subcommand, _unknown_key, _bad_choice, _bad_type):
        text = rule(message)
        if text:
            return text
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    useful = [
        ln
        for ln in lines
        if not ln.startswith(("Given value", "Subtypes:", "Errors:", "- Expected a <class 'NoneType'>"))
    ]
    return " ".join(useful[:4]) + " (run `python run_lightening.py test --help` for the options)"
