"""One place that checks a configuration before any work: the keys that must agree with each
other, and those a mode needs. Called by the CLI (for its mode), the Python API and
``segment_image`` (through the API), so every entry point gets every check.

Errors are :class:`~no_time_to_train.errors.ConfigError` naming the flags to change; the return
value lists warnings (keys accepted for the reference's configs and ignored).
"""

from __future__ import annotations

from typing import Any

from no_time_to_train.config import DatasetCfgs, ImageSetCfg, ModelCfg
from no_time_to_train.encoders import check_input_size, encoder_spec, pixel_stats_of
from no_time_to_train.errors import ConfigError

FLAG = "--model.init_args."
SUPPORTED_METHODS = ("matching_baseline_noamg",)

# Keys of the reference's configs that this project accepts and ignores: (path, default, why).
IGNORED_KEYS = (
    ("model_cfg.memory_bank_cfg.enable", True, "the memory bank is the method"),
    ("dataset_cfgs.test.with_query_points", False, "the point grid is always used"),
)


def _get(tree: object, dotted: str) -> object:
    for part in dotted.split("."):
        tree = getattr(tree, part)
    return tree


def check_patch_size(name: str, patch_size: int) -> None:
    """``encoder_cfg.patch_size`` must be the named encoder's (it sets the token grid with img_size)."""
    spec = encoder_spec(name)  # a ConfigError for unknown names
    if patch_size != spec.patch_size:
        raise ConfigError(
            f"{FLAG}model_cfg.encoder_cfg.patch_size={patch_size}, but {name} has "
            f"{spec.patch_size} x {spec.patch_size} patches. Set it to {spec.patch_size} (and img_size to a "
            f"multiple of it; the reference uses {spec.img_size})."
        )


def check_model(model_cfg: ModelCfg, negatives: bool = False) -> None:
    """The method, the proposer, the encoder and the bank sizes. ``negatives``: a negative bank is
    used (its length must be positive)."""
    from no_time_to_train.proposers import proposer_plugin

    if model_cfg.name.lower() not in SUPPORTED_METHODS:
        raise ConfigError(
            f"model_cfg.name={model_cfg.name!r} is not supported; use 'matching_baseline_noAMG' (the paper's method)."
        )
    proposer_plugin(model_cfg.proposer)  # a ConfigError naming the registered ones
    infer, bank = model_cfg.sam2_infer_cfgs, model_cfg.memory_bank_cfg
    if infer.cls_num_per_mask != 1:
        raise ConfigError("sam2_infer_cfgs.cls_num_per_mask: only 1 (one label per mask) is supported.")
    if bank.category_num < 1 or bank.length < 1:
        raise ConfigError(
            f"memory_bank_cfg: category_num ({bank.category_num}) and length ({bank.length}) must be >= 1."
        )
    if (negatives or infer.with_negative_refs) and bank.length_negative < 1:
        raise ConfigError(f"memory_bank_cfg.length_negative must be >= 1, got {bank.length_negative}.")
    enc = model_cfg.encoder_cfg
    check_patch_size(enc.name, enc.patch_size)
    check_input_size(enc.name, enc.img_size)
    pixel_stats_of(enc.name, enc.pixel_stats)
    if model_cfg.compute_cfgs.merge_chunk < 1:
        raise ConfigError(
            f"{FLAG}model_cfg.compute_cfgs.merge_chunk must be >= 1, got {model_cfg.compute_cfgs.merge_chunk}."
        )


def check_image_set(c: ImageSetCfg, where: str) -> None:
    if c.name != "coco":
        raise ConfigError(
            f"dataset_cfgs.{where}.name={c.name!r}: only 'coco' (COCO-format json) is supported."
        )
    if c.norm_img:
        raise ConfigError(
            f"dataset_cfgs.{where}.norm_img: images are normalised by the encoders; set it False."
        )


def validate(model_cfg: ModelCfg, dataset_cfgs: DatasetCfgs | None = None, mode: Any = None) -> list[str]:
    """Check ``model_cfg`` (and, for a ``mode`` of ``cli.modes.MODES``, the data it reads); raise a
    ConfigError naming the flags when keys disagree. Returns the warnings about ignored keys."""
    from no_time_to_train.proposers import proposer_input_size

    check_model(model_cfg, negatives=mode is not None and mode.negatives in ("fresh", "filled"))
    warnings = []
    trees = {"model_cfg": model_cfg, "dataset_cfgs": dataset_cfgs}
    for path, default, why in IGNORED_KEYS:
        root, rest = path.split(".", 1)
        if trees[root] is not None and _get(trees[root], rest) != default:
            warnings.append(f"{FLAG}{path} is accepted for compatibility and ignored ({why}).")
    if dataset_cfgs is None or mode is None:
        return warnings
    enc, fill = model_cfg.encoder_cfg, dataset_cfgs.fill_memory
    if mode.data == "references":
        check_image_set(fill, "fill_memory")
        if fill.image_size != enc.img_size:
            # The encoder resizes its input to img_size: a different crop size would resize twice.
            raise ConfigError(
                f"{FLAG}dataset_cfgs.fill_memory.image_size ({fill.image_size}) must equal "
                f"{FLAG}model_cfg.encoder_cfg.img_size ({enc.img_size}): reference crops are made at the "
                "encoder's input size. Set both to the same value."
            )
        if mode.writes_memory and fill.memory_length != model_cfg.memory_bank_cfg.length:
            warnings.append(
                f"{FLAG}dataset_cfgs.fill_memory.memory_length ({fill.memory_length}) is ignored: the shots per "
                f"class are {FLAG}model_cfg.memory_bank_cfg.length ({model_cfg.memory_bank_cfg.length})."
            )
    target = {"targets": ("test", dataset_cfgs.test), "support": ("support", dataset_cfgs.support)}.get(
        mode.data
    )
    if target is not None and target[1] is not None:
        where, c = target
        check_image_set(c, where)
        if c.json_file is None and mode.data != "targets":
            raise ConfigError(
                f"dataset_cfgs.{where}.json_file: {mode.name} needs ground truth; name the json."
            )
        size = proposer_input_size(model_cfg)
        if c.image_size != size:
            raise ConfigError(
                f"{FLAG}dataset_cfgs.{where}.image_size={c.image_size}: the proposer "
                f"({model_cfg.proposer}) takes {size} x {size} inputs; set it to {size}."
            )
    return warnings
