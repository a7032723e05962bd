"""Memory files: the bank's buffers plus a description of what they were made with.

One format for the CLI (``--out_path`` / ``--ckpt_path``, written through Lightning's checkpoint
machinery) and the Python API: a torch pickle of plain types,
``{"state_dict": {"memory.<buffer>": tensor}, "no_time_to_train_memory": meta, ...}``. It never holds
network weights; loading is ``weights_only=True``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from no_time_to_train.errors import CheckpointError
from no_time_to_train.io_utils import atomic_open, load_tensors
from no_time_to_train.models.memory_bank import MemoryBank

FORMAT_VERSION = 1
META_KEY = "no_time_to_train_memory"
PREFIX = "memory."
NEG_PREFIX = "memory_neg."  # the negative references' bank (``with_negative_refs``), same buffers

# Meta entries that must agree between a file and the configuration, with the flag that sets each.
CHECKED_FIELDS = {
    "category_num": "--model.init_args.model_cfg.memory_bank_cfg.category_num",
    "length": "--model.init_args.model_cfg.memory_bank_cfg.length",
    "encoder": "--model.init_args.model_cfg.encoder_cfg.name",
    "img_size": "--model.init_args.model_cfg.encoder_cfg.img_size",
    "patch_size": "--model.init_args.model_cfg.encoder_cfg.patch_size",
    "kmeans_k": "--model.init_args.model_cfg.sam2_infer_cfgs.kmeans_k",
    "n_pca_components": "--model.init_args.model_cfg.sam2_infer_cfgs.n_pca_components",
}


# Entries added after version 1 files were first written, with the value those files imply.
IMPLIED = {"patch_size": 14}  # only DINOv2 (14 x 14 patches) existed then


def make_meta(bank: MemoryBank, encoder: str, img_size: int, class_names: list[str] | None = None,
              patch_size: int = 14) -> dict:  # fmt: skip
    """What a memory file records: the bank's shape and statistics settings, the encoder (name,
    input size, patch size) whose features it holds, and the classes."""
    return {
        "format_version": FORMAT_VERSION,
        "category_num": bank.category_num,
        "length": bank.length,
        "feat_dim": bank.feat_dim,
        "encoder": encoder,
        "img_size": img_size,
        "patch_size": patch_size,
        "kmeans_k": bank.kmeans_k,
        "n_pca_components": bank.n_pca_components,
        "cat_ids": [int(c) for c in bank.mem_cat_ids.tolist()],
        "class_names": list(class_names) if class_names else None,
        "postprocessed": bank.is_postprocessed,
    }


def check_meta(checkpoint: dict, expected: dict, path: str) -> dict:
    """Validate a loaded file against ``expected`` (a ``make_meta`` dict); return its meta."""
    meta = checkpoint.get(META_KEY) if isinstance(checkpoint, dict) else None
    if meta is None:
        keys = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
        origin = (
            "the original implementation" if any(k.startswith("seg_model.") for k in keys) else "elsewhere"
        )
        raise CheckpointError(
            f"{path} is not a memory file of this tool (it comes from {origin}). Re-create it with "
            "--model.test_mode fill_memory and then postprocess_memory."
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has memory format version {meta.get('format_version')}; this version reads "
            f"{FORMAT_VERSION}. Re-create it with fill_memory and postprocess_memory."
        )
    wrong = [
        f"{k}: file has {meta.get(k, IMPLIED.get(k))!r}, configuration has {expected[k]!r} ({flag})"
        for k, flag in CHECKED_FIELDS.items()
        if meta.get(k, IMPLIED.get(k)) != expected[k]
    ]
    if wrong:
        raise CheckpointError(
            f"{path} does not match the configuration: " + "; ".join(wrong) + ". Pass the values the memory "
            "was made with (or re-create the memory with the new ones)."
        )
    return meta


def bank_state(state_dict: dict[str, Any], prefix: str = PREFIX) -> dict[str, Any]:
    """The bank's own buffers from a checkpoint ``state_dict`` (``memory.`` prefix removed)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def has_negatives(state_dict: dict[str, Any]) -> bool:
    return any(k.startswith(NEG_PREFIX) for k in state_dict)


def load_negative_state(bank: MemoryBank, state_dict: dict[str, Any], path: str = "the memory file") -> None:
    """Load a file's ``memory_neg.*`` buffers into the negative bank (strict)."""
    try:
        bank.load_state_dict(bank_state(state_dict, NEG_PREFIX), strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{path}: its negative references do not fit this configuration ({str(e).splitlines()[0]}); "
            "memory_bank_cfg.length_negative must be the one they were sampled with. Re-create them with "
            "fill_memory_neg and postprocess_memory_neg."
        ) from e


def require_negatives(bank: MemoryBank | None, what: str) -> None:
    """``with_negative_refs`` needs a memory file whose negatives are postprocessed."""
    if bank is not None and bank.is_postprocessed:
        return
    got = (
        "negatives not yet postprocessed" if bank is not None and bank.is_filled else "no negative references"
    )
    raise CheckpointError(
        f"{what} with --model.init_args.model_cfg.sam2_infer_cfgs.with_negative_refs True needs a memory file "
        f"with postprocessed negatives, but it has {got}. Run test_support, fill_memory_neg and "
        "postprocess_memory_neg first (README, Negative references), or drop with_negative_refs."
    )


def load_bank_state(bank: MemoryBank, state_dict: dict[str, Any], path: str = "the memory file") -> Any:
    """Load a file's ``memory.*`` buffers into ``bank`` (strict); CheckpointError naming the path."""
    try:
        return bank.load_state_dict(bank_state(state_dict), strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{path}: its memory bank does not fit this configuration ({str(e).splitlines()[0]}). Re-create "
            "it with --model.test_mode fill_memory and then postprocess_memory."
        ) from e


def load_into(bank: MemoryBank, checkpoint: dict, expected: dict, path: str) -> dict:
    """Validate a read file against ``expected`` (a ``make_meta`` dict), load it into ``bank``, and
    return its meta. The CLI does the same in two steps through Lightning's checkpoint hooks."""
    meta = check_meta(checkpoint, expected, path)
    load_bank_state(bank, checkpoint["state_dict"], path)
    return meta


def require_postprocessed(
    bank: MemoryBank, what: str, expected: str = "--ckpt_path memory_postprocessed.ckpt"
) -> None:
    """Refuse to segment with a bank that postprocess_memory has not finished (CLI and API alike)."""
    if bank.is_postprocessed:
        return
    got = "a memory file written by fill_memory" if bank.is_filled else "no memory file"
    raise CheckpointError(
        f"{what} needs a postprocessed memory ({expected}), but got {got}. "
        "Run fill_memory and then postprocess_memory."
    )


def read(path: str, mmap: bool = False) -> dict:
    """Load a memory file (plain tensors and types only); CheckpointError naming the path.

    ``mmap=True`` maps tensor data instead of reading it (cheap for checking a large foreign file).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Memory file not found: {path}.")
    try:
        return load_tensors(path, mmap=mmap)
    except Exception as e:
        reason = str(e).strip().split("\n")[0].split(". ")[0].rstrip(".") or type(e).__name__
        raise CheckpointError(
            f"Could not read the memory file {path} ({reason}): it is truncated (an interrupted copy?) or "
            "not a memory file of this tool. Re-create it with --model.test_mode fill_memory and then "
            "postprocess_memory."
        ) from e


def write(path: str, bank: MemoryBank, meta: dict, negatives: MemoryBank | None = None) -> None:
    """Write a memory file atomically, readable by ``--ckpt_path`` as well as the Python API;
    ``negatives`` (a filled negative bank) are stored under ``memory_neg.``."""
    import pytorch_lightning as pl

    state = {PREFIX + k: v.detach().cpu() for k, v in bank.state_dict().items()}
    if negatives is not None and negatives.is_filled:
        state |= {NEG_PREFIX + k: v.detach().cpu() for k, v in negatives.state_dict().items()}
        meta = {**meta, "negatives": {"length": negatives.length, "postprocessed": negatives.is_postprocessed,
                                      "counts": [int(c) for c in negatives.mem_fill_counts.tolist()]}}  # fmt: skip
    payload = {"state_dict": state, META_KEY: meta, "pytorch-lightning_version": pl.__version__,
               "epoch": 0, "global_step": 0}  # fmt: skip
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
