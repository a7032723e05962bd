"""Build the encoder a configuration names (shared by the LightningModule and the Python API);
proposers are built by their plug-ins (``no_time_to_train.proposers``)."""

from __future__ import annotations

from torch import nn

from no_time_to_train.config import ModelCfg
from no_time_to_train.errors import ConfigError
from no_time_to_train.validation import check_patch_size


def encoder_feat_dim(name: str) -> int:
    """D of the encoder ``name`` (any family of ``checkpoints.encoder_zoo``); ConfigError if unknown."""
    from no_time_to_train.checkpoints.encoder_zoo import encoder_spec

    return encoder_spec(name).feat_dim


def build_encoder(cfg: ModelCfg) -> nn.Module:
    """The patch-feature encoder of ``encoder_cfg`` / ``encoder_ckpt_path``: DINOv2, DINOv3, CLIP
    or Perception Encoder (``checkpoints.encoder_zoo``)."""
    from no_time_to_train.checkpoints.encoder_zoo import encoder_spec

    enc = cfg.encoder_cfg
    spec = encoder_spec(enc.name)  # a ConfigError for unknown names
    check_patch_size(enc.name, enc.patch_size)
    if spec.family == "dinov2":
        from no_time_to_train.checkpoints.loading import build_dinov2

        if enc.pixel_stats not in ("default", "imagenet"):
            raise ConfigError(
                f"encoder_cfg.pixel_stats={enc.pixel_stats!r}: DINOv2 uses ImageNet statistics."
            )
        return build_dinov2(enc.name, cfg.encoder_ckpt_path, img_size=enc.img_size)
    from no_time_to_train.checkpoints.encoder_loading import build_zoo_encoder

    return build_zoo_encoder(
        enc.name, cfg.encoder_ckpt_path, img_size=enc.img_size, pixel_stats=enc.pixel_stats
    )
