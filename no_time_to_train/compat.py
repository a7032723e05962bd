"""Every use of a third-party internal (a private name or an undocumented layout) in one place.

Checked against the tested set in ``constraints.txt``: torch 2.9.1 and 2.15.0 (both ends of the
supported range), torchvision 0.24.1 / 0.29.2, sam2 1.1.0, timm 1.0.31, pytorch_lightning 2.6.6,
jsonargparse 4.53.0. When one of them changes, this is the file to read first.

Internals used elsewhere only through documented hooks, listed so they are not forgotten:

* torch: ``nn.Module._load_from_state_dict`` (``models.memory_bank`` resizes its packed buffers
  before loading; the documented extension point of ``load_state_dict``).
* timm: ``create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))`` runs timm's
  DINOv2 checkpoint filter, which renames Meta's keys (``checkpoints.loading``); ``checkpoint_path=``
  skips that filter and is not used.
* sam2: the mask decoder's module layout (``TwoWayTransformer`` of ``TwoWayAttentionBlock`` and
  ``Attention``), checked by ``models.sam2_fast_decoder.supports`` before the fast decoder is used; any
  other layout falls back to the official ``MaskDecoder.forward``.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def sam2_prepare_backbone_features(sam2: nn.Module, backbone_out: dict) -> tuple[list, list]:
    """``SAM2Base._prepare_backbone_features`` (private in sam2 1.1.0): the image encoder's
    outputs flattened to ``(HW, B, C)`` per level, and their ``(H, W)`` sizes, as the official
    image predictor uses them."""
    _, vision_feats, _, feat_sizes = sam2._prepare_backbone_features(backbone_out)
    return vision_feats, feat_sizes


def ensure_sam2_hydra() -> None:
    """``import sam2`` initialises Hydra's global state with sam2's config module (sam2 1.1.0's
    ``sam2/__init__.py``); redo it if something cleared Hydra, as ``build_sam2`` needs it."""
    import sam2  # noqa: F401
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        from hydra import initialize_config_module

        initialize_config_module("sam2", version_base="1.2")


def sam2_transformer_classes() -> tuple[type, type, type]:
    """``(TwoWayTransformer, TwoWayAttentionBlock, Attention)`` from sam2's module layout."""
    from sam2.modeling.sam.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

    return TwoWayTransformer, TwoWayAttentionBlock, Attention


class CheckpointWithoutHyperparameters:
    """Mixin for ``LightningCLI`` (pytorch_lightning 2.6.6): LightningCLI's private
    ``_parse_ckpt_path`` reads ``--ckpt_path`` before instantiation to merge the file's
    ``hyper_parameters`` into the config. Memory files hold none, so the mixin replaces that step
    with ``check_ckpt_path(path)``, which the CLI defines."""

    def _parse_ckpt_path(self) -> None:
        config: Any = self.config  # type: ignore[attr-defined]
        subcommand = config.get("subcommand")
        path = config[subcommand].get("ckpt_path") if subcommand else None
        self.check_ckpt_path(path)

    def check_ckpt_path(self, path: str | None) -> None:
        raise NotImplementedError
