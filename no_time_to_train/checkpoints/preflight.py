"""Every checkpoint problem of a run in one message, before any network is built; and presets.

``check_checkpoints`` looks at the SAM2 and encoder files a run names (file present and readable,
in Meta's format, of the model the config names) and raises one :class:`CheckpointError` listing
every problem, each with the flag or keyword argument to change, in the caller's spelling (CLI,
Python API or ``segment_image``). When files of known checkpoints lie in ``checkpoints/`` (real
or random-weight stand-ins) the message says how to use them.

The loaders (``checkpoints.loading``) still load every file strictly; this check only makes the
common mistakes (missing file, wrong size, wrong encoder) arrive together.

Presets name a consistent set of the four settings: ``paper`` (SAM2-L + DINOv2-L), ``small``
(SAM2-t + DINOv2-S, ``checkpoints/download_checkpoints.sh --small``) and ``random`` (the small pair
with random weights in ``checkpoints/random/``, written on first use: every step runs, the outputs
are meaningless).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from no_time_to_train.checkpoints.registry import SAM2_CHECKPOINT_FILES, resolve_sam2_config, sam2_config_of
from no_time_to_train.encoders import ENCODERS, FAMILIES, identify_checkpoint
from no_time_to_train.errors import CheckpointError, ConfigError
from no_time_to_train.io_utils import load_tensors

if TYPE_CHECKING:
    from no_time_to_train.config import ModelCfg

FLAGS: dict[str, dict[str, str]] = {
    "cli": {
        "sam2_cfg": "--model.init_args.model_cfg.sam2_cfg_file",
        "sam2_ckpt": "--model.init_args.model_cfg.sam2_ckpt_path",
        "encoder": "--model.init_args.model_cfg.encoder_cfg.name",
        "encoder_ckpt": "--model.init_args.model_cfg.encoder_ckpt_path",
    },
    "api": {"sam2_cfg": "sam2_cfg=", "sam2_ckpt": "sam2_ckpt=", "encoder": "encoder=", "encoder_ckpt": "encoder_ckpt="},
    "segment_image": {
        "sam2_cfg": "--sam2-cfg", "sam2_ckpt": "--sam2-ckpt", "encoder": "--encoder", "encoder_ckpt": "--encoder-ckpt",
    },
}  # fmt: skip


def setting(flags: Mapping[str, str], key: str, value: str) -> str:
    """``--sam2-cfg sam2_hiera_t.yaml`` for flags, ``sam2_cfg='sam2_hiera_t.yaml'`` for keywords."""
    flag = flags[key]
    return f"{flag}{value!r}" if flag.endswith("=") else f"{flag} {value}"


PRESET_SPELLING = {"cli": None, "api": "preset='{}'", "segment_image": "--preset {}"}


@dataclass(frozen=True)
class Preset:
    sam2_cfg: str
    sam2_ckpt: str
    encoder: str
    encoder_ckpt: str
    random: bool = False


PRESETS: dict[str, Preset] = {
    "paper": Preset("sam2_hiera_l.yaml", "./checkpoints/sam2_hiera_large.pt", "dinov2_large",
                    "./checkpoints/dinov2/dinov2_vitl14_pretrain.pth"),
    "small": Preset("sam2_hiera_t.yaml", "./checkpoints/sam2_hiera_tiny.pt", "dinov2_small",
                    "./checkpoints/dinov2/dinov2_vits14_pretrain.pth"),
    "random": Preset("sam2_hiera_t.yaml", "./checkpoints/random/sam2_hiera_tiny.pt", "dinov2_small",
                     "./checkpoints/random/dinov2/dinov2_vits14_pretrain.pth", random=True),
}  # fmt: skip

RANDOM_BANNER = (
    "RANDOM WEIGHTS ({}): every step runs for real, but the masks and scores are meaningless. "
    "Download the official files for real results (checkpoints/README.md)."
)


def resolve_preset(name: str, root: str | os.PathLike = ".") -> Preset:
    """The preset ``name``; for ``random``, the stand-ins are written under ``root`` if absent."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    if preset.random:
        from no_time_to_train.tools.random_checkpoints import main as write_random

        dest = Path(root) / "checkpoints" / "random"
        if not (Path(root) / preset.sam2_ckpt).is_file() or not (Path(root) / preset.encoder_ckpt).is_file():
            write_random(["--random-weights", "--small", "--no-large", "--dest", str(dest), "--force"])
        print(RANDOM_BANNER.format(f"{preset.sam2_ckpt}, {preset.encoder_ckpt}"))
    return preset


def _load(path: Path) -> Any:
    try:
        return load_tensors(path, mmap=True)
    except Exception as err:
        raise ValueError(f"{type(err).__name__}: {' '.join(str(err).split())[:160]}") from err


MOBILE_SAM_REFUSAL = (
    "this is a MobileSAM checkpoint (SAM v1's prompt encoder and mask decoder behind a TinyViT image "
    "encoder), which is not supported: the method's proposals come from SAM2's point-grid decoder, and "
    "the reference's new_exps/mobilesam config names this file under a SAM2 config without code that "
    "could build it. For a small, fast segmenter use SAM2 Hiera-T (new_exps/sam2/sam2_tiny.yaml)"
)


def is_mobile_sam(path: Path, checkpoint: Any) -> bool:
    """A MobileSAM file: its name, or TinyViT image-encoder keys (``image_encoder.layers.*``)."""
    if "mobile_sam" in path.name.lower():
        return True
    sd = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    return isinstance(sd, Mapping) and any(str(k).startswith("image_encoder.patch_embed.seq.") for k in sd)


def sam2_problem(cfg_file: str, ckpt: str | None, flags: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(problem, the config the file belongs to) for the SAM2 pair."""
    try:
        name = resolve_sam2_config(cfg_file)
    except ConfigError as err:
        return f"{flags['sam2_cfg']} {cfg_file}: {err}", None
    if ckpt is None:
        return None, None
    path, official = Path(ckpt), SAM2_CHECKPOINT_FILES[name]
    if not path.is_file():
        return (f"SAM2 checkpoint {ckpt} ({flags['sam2_ckpt']}) not found; {name} needs {official.file_name} "
                f"({official.url})"), None  # fmt: skip
    try:
        ckpt_obj = _load(path)
    except ValueError as err:
        return (
            f"SAM2 checkpoint {ckpt} ({flags['sam2_ckpt']}) cannot be read ({err}): probably truncated or corrupt (an interrupted download?); delete it and download it again",
            None,
        )
    if is_mobile_sam(path, ckpt_obj):
        return f"{ckpt} ({flags['sam2_ckpt']}): {MOBILE_SAM_REFUSAL}", None
    model = ckpt_obj.get("model") if isinstance(ckpt_obj, Mapping) else None
    if not isinstance(model, Mapping):
        return (
            f"SAM2 checkpoint {ckpt} ({flags['sam2_ckpt']}) is not in Meta's format (a dict with 'model')",
            None,
        )
    found = sam2_config_of(model)
    if found is not None and found != name:
        return (f"SAM2 checkpoint {ckpt} is the file of {found}, but the config is {cfg_file}: pass "
                f"{setting(flags, 'sam2_cfg', found)}, or as {flags['sam2_ckpt']} a {official.file_name}"), found  # fmt: skip
    return None, found


def _encoder_problem(name: str, ckpt: str | None, flags: Mapping[str, str]) -> str | None:
    spec = ENCODERS.get(name)
    if spec is None:
        return f"{flags['encoder']} {name}: not a known encoder (one of {', '.join(ENCODERS)})"
    if ckpt is None:
        return None
    path = Path(ckpt)
    official = Path(spec.ckpt_path).name
    if not path.is_file():
        return f"encoder checkpoint {ckpt} ({flags['encoder_ckpt']}) not found; {name} needs {official} ({spec.download})"
    try:
        state_dict = _load(path)
    except ValueError as err:
        return f"encoder checkpoint {ckpt} ({flags['encoder_ckpt']}) cannot be read ({err}): probably truncated or corrupt (an interrupted download?); delete it and download it again"
    found = identify_checkpoint(state_dict) if isinstance(state_dict, Mapping) else None
    if found is not None and found != name and Path(ENCODERS[found].ckpt_path).name != official:
        return (f"encoder checkpoint {ckpt} is the file of {found}, but the encoder is {name}: pass "
                f"{setting(flags, 'encoder', found)}, or as {flags['encoder_ckpt']} a {official}")  # fmt: skip
    return None


def present_checkpoints(root: str | os.PathLike = ".") -> list[str]:
    """Known official files under ``root/checkpoints`` (and its ``random/`` stand-ins)."""
    names = {v.file_name: k for k, v in SAM2_CHECKPOINT_FILES.items()}
    names |= {Path(v.ckpt_path).name: k for k, v in ENCODERS.items()}
    found = []
    subfolders = ("", *(f"/{f.subfolder}" for f in FAMILIES.values()))
    for folder in [f"checkpoints{s}" for s in subfolders] + [f"checkpoints/random{s}" for s in subfolders]:
        d = Path(root) / folder
        if d.is_dir():
            found += [f"{d / f} ({names[f]})" for f in sorted(os.listdir(d)) if f in names]
    return found


def check_checkpoints(cfg: ModelCfg, style: str = "api", root: str | os.PathLike = ".", proposer: bool = True,
                      encoder: bool = True) -> None:  # fmt: skip
    """Raise one CheckpointError listing every problem of the checkpoint settings of ``cfg``: the
    selected proposer's (its plug-in's ``checkpoint_problem``) and the encoder's (see the module
    doc). ``proposer`` / ``encoder`` False: that network is not built by this run; not checked."""
    from no_time_to_train.proposers import proposer_plugin

    flags = FLAGS[style]
    found = [proposer_plugin(cfg.proposer).checkpoint_problem(cfg, flags) if proposer else None,
             _encoder_problem(cfg.encoder_cfg.name, cfg.encoder_ckpt_path, flags) if encoder else None]  # fmt: skip
    problems = [p for p in found if p]
    if not problems:
        return
    listed = " ".join(f"({i}) {p}." for i, p in enumerate(problems, 1))
    text = f"{len(problems)} checkpoint problem{'s' if len(problems) > 1 else ''}: {listed}"
    present = present_checkpoints(root)
    if present:
        text += f" Files present: {', '.join(present)}."
    spelling = PRESET_SPELLING[style]
    if spelling:
        text += (f" Presets set all four at once: {spelling.format('small')} (SAM2-t + DINOv2-S), "
                 f"{spelling.format('paper')} (SAM2-L + DINOv2-L), or {spelling.format('random')} "
                 "(random-weight stand-ins, written if absent: runs, meaningless outputs).")  # fmt: skip
    else:
        text += (" The pair of pl_configs/demo_tiny.yaml (SAM2-t + DINOv2-S) is a second --config; "
                 "see checkpoints/README.md for downloads and random-weight stand-ins.")  # fmt: skip
    raise CheckpointError(text)
