"""Build the encoder a configuration names (shared by the LightningModule and the Python API);
proposers are built by their plug-ins (``no_time_to_train.proposers``)."""

from __future__ import annotations

from torch import nn

from no_time_to_train.config import ModelCfg
from no_time_to_train.encoders import build_encoder as build_family_encoder
from no_time_to_train.encoders import encoder_spec
from no_time_to_train.validation import check_patch_size


def encoder_feat_dim(name: str) -> int:
    """D of the encoder ``name`` (any registered family); ConfigError if unknown."""
    return encoder_spec(name).feat_dim


def build_encoder(cfg: ModelCfg) -> nn.Module:
    """The frozen patch-feature encoder of ``encoder_cfg`` / ``encoder_ckpt_path``, built by its
    family (``no_time_to_train.encoders``: DINOv2, DINOv3, CLIP, Perception Encoder)."""
    enc = cfg.encoder_cfg
    check_patch_size(enc.name, enc.patch_size)  # also a ConfigError for unknown names
    return build_family_encoder(
        enc.name, cfg.encoder_ckpt_path, img_size=enc.img_size, pixel_stats=enc.pixel_stats
    )
