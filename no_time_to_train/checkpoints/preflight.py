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

import torch

from no_time_to_train.checkpoints.encoder_zoo import ZOO
from no_time_to_train.checkpoints.registry import (
    DINOV2_VARIANTS,
    SAM2_CHECKPOINT_FILES,
    block_count,
    resolve_sam2_config,
    sam2_config_of,
)  # fmt: skip
from no_time_to_train.errors import CheckpointError, ConfigError

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
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:  # legacy (non-zip) files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
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


def _dinov2_of(state_dict: Mapping[str, Any]) -> str | None:
    pos = state_dict.get("pos_embed")
    if not isinstance(pos, torch.Tensor):
        return None
    dim, depth = pos.shape[-1], block_count(state_dict, "blocks.")
    registers = 4 if ("register_tokens" in state_dict or "reg_token" in state_dict) else 0
    for name, v in DINOV2_VARIANTS.items():
        if (v.feat_dim, v.depth, v.registers) == (dim, depth, registers):
            return name
    return None


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


def _zoo_of(state_dict: Mapping[str, Any]) -> str | None:
    """The DINOv3 / CLIP / PE encoder whose official layout ``state_dict`` has, or None."""

    def match(family: str, dim: int, depth: int, extra: Any = None) -> str | None:
        names = [n for n, s in ZOO.items() if s.family == family and (s.feat_dim, s.depth) == (dim, depth)]
        if extra is not None:
            names = [n for n in names if extra(n)] or names
        return names[0] if len(names) == 1 else (names[0] if names else None)

    if isinstance(state_dict.get("storage_tokens"), torch.Tensor):
        dim, depth = state_dict["cls_token"].shape[-1], block_count(state_dict, "blocks.")
        swiglu = "blocks.0.mlp.w1.weight" in state_dict
        local = "local_cls_norm.weight" in state_dict
        return match("dinov3", dim, depth,
                     lambda n: (("plus" in n or "huge" in n or "7b" in n) == swiglu) and (("sat" in n or "7b" in n) == local))  # fmt: skip
    conv = state_dict.get("visual.conv1.weight")
    if isinstance(conv, torch.Tensor):
        pos = state_dict["visual.positional_embedding"].shape[0] - 1
        side = int(round(pos**0.5)) * conv.shape[-1]
        return match("clip", conv.shape[0], block_count(state_dict, "visual.transformer.resblocks."),
                     lambda n: ZOO[n].patch_size == conv.shape[-1] and ZOO[n].native_size == side)  # fmt: skip
    conv = state_dict.get("conv1.weight")
    if isinstance(conv, torch.Tensor):
        return match("pe", conv.shape[0], block_count(state_dict, "transformer.resblocks."))
    return None


def _encoder_problem(name: str, ckpt: str | None, flags: Mapping[str, str]) -> str | None:
    spec = ZOO.get(name)
    if spec is None:
        return f"{flags['encoder']} {name}: not a known encoder (one of {', '.join(ZOO)})"
    if ckpt is None:
        return None
    path = Path(ckpt)
    official = Path(spec.ckpt_path).name
    if not path.is_file():
        source = f"({DINOV2_VARIANTS[name].url})" if spec.family == "dinov2" else f"({spec.download})"
        return (
            f"encoder checkpoint {ckpt} ({flags['encoder_ckpt']}) not found; {name} needs {official} {source}"
        )
    try:
        state_dict = _load(path)
    except ValueError as err:
        return f"encoder checkpoint {ckpt} ({flags['encoder_ckpt']}) cannot be read ({err}): probably truncated or corrupt (an interrupted download?); delete it and download it again"
    found = None
    if isinstance(state_dict, Mapping):
        found = _dinov2_of(state_dict) or _zoo_of(state_dict)
    if found is not None and found != name and Path(ZOO[found].ckpt_path).name != official:
        return (f"encoder checkpoint {ckpt} is the file of {found}, but the encoder is {name}: pass "
                f"{setting(flags, 'encoder', found)}, or as {flags['encoder_ckpt']} a {official}")  # fmt: skip
    return None


def present_checkpoints(root: str | os.PathLike = ".") -> list[str]:
    """Known official files under ``root/checkpoints`` (and its ``random/`` stand-ins)."""
    names = {v.file_name: k for k, v in SAM2_CHECKPOINT_FILES.items()}
    names |= {Path(v.ckpt_path).name: k for k, v in ZOO.items()}
    found = []
    subfolders = ("", "/dinov2", "/dinov3/checkpoints", "/clip", "/pe")
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
