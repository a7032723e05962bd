"""Build the networks a configuration names (shared by the LightningModule and the Python API)."""

from __future__ import annotations

from torch import nn

from no_time_to_train.config import ModelCfg
from no_time_to_train.errors import ConfigError


def encoder_feat_dim(name: str) -> int:
    """D of the encoder ``name`` (any family of ``checkpoints.encoder_zoo``); ConfigError if unknown."""
    from no_time_to_train.checkpoints.encoder_zoo import encoder_spec

    return encoder_spec(name).feat_dim


def check_patch_size(name: str, patch_size: int) -> None:
    """``encoder_cfg.patch_size`` must be the named encoder's (it sets the token grid with img_size)."""
    from no_time_to_train.checkpoints.encoder_zoo import encoder_spec

    spec = encoder_spec(name)
    if patch_size != spec.patch_size:
        raise ConfigError(
            f"--model.init_args.model_cfg.encoder_cfg.patch_size={patch_size}, but {name} has "
            f"{spec.patch_size} x {spec.patch_size} patches. Set it to {spec.patch_size} (and img_size to a "
            f"multiple of it; the reference uses {spec.img_size})."
        )


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


def build_sam2_model(cfg: ModelCfg) -> nn.Module:
    from no_time_to_train.checkpoints.loading import build_sam2

    # Built on the CPU; Lightning / the API move it to the run's device afterwards.
    return build_sam2(cfg.sam2_cfg_file, cfg.sam2_ckpt_path, device="cpu")


def build_proposer(cfg: ModelCfg, sam2: nn.Module | None = None) -> nn.Module:
    """SAM2 point-grid proposer from ``sam2_cfg_file`` / ``sam2_ckpt_path`` / ``sam2_infer_cfgs``."""
    from no_time_to_train.models.sam2_proposer import Sam2PointGridProposer

    inf = cfg.sam2_infer_cfgs
    return Sam2PointGridProposer(
        sam2 if sam2 is not None else build_sam2_model(cfg),
        inf.points_per_side,
        inf.testing_point_bs,
        inf.iou_thr,
        add_no_mem_embed=inf.add_no_mem_embed,
        decoder_chunk=cfg.compute_cfgs.decoder_chunk,
    )
