"""Build the networks a configuration names (shared by the LightningModule and the Python API)."""

from __future__ import annotations

from torch import nn

from no_time_to_train.config import ModelCfg
from no_time_to_train.errors import ConfigError


def encoder_feat_dim(name: str) -> int:
    from no_time_to_train.checkpoints.registry import DINOV2_VARIANTS

    if name not in DINOV2_VARIANTS:
        raise ConfigError(
            f"model_cfg.encoder_cfg.name={name!r} is not a known encoder; "
            f"choose one of {sorted(DINOV2_VARIANTS)}."
        )
    return DINOV2_VARIANTS[name].feat_dim


def build_encoder(cfg: ModelCfg) -> nn.Module:
    """DINOv2 patch-feature encoder from ``encoder_cfg`` / ``encoder_ckpt_path``."""
    from no_time_to_train.checkpoints.loading import build_dinov2
    from no_time_to_train.models.dinov2 import DinoV2Encoder

    enc = cfg.encoder_cfg
    encoder_feat_dim(enc.name)  # a ConfigError for unknown names
    if enc.patch_size != DinoV2Encoder.patch_size:
        raise ConfigError(
            f"--model.init_args.model_cfg.encoder_cfg.patch_size={enc.patch_size}, but {enc.name} has "
            f"{DinoV2Encoder.patch_size} x {DinoV2Encoder.patch_size} patches. Set it to {DinoV2Encoder.patch_size}."
        )
    return build_dinov2(enc.name, cfg.encoder_ckpt_path, img_size=enc.img_size)


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
