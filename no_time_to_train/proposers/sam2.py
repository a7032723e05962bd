"""The ``sam2`` proposer: SAM2 prompted with a regular point grid (``models.sam2_proposer``), built
from ``sam2_cfg_file`` / ``sam2_ckpt_path`` / ``sam2_infer_cfgs``; Meta's official checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from no_time_to_train.proposers import ProposerPlugin, plugin_args, register_proposer

if TYPE_CHECKING:
    from no_time_to_train.config import ModelCfg
    from no_time_to_train.models.box_prompt import BoxPromptSegmenter

SAM2_INPUT_SIZE = 1024
"""SAM2's image encoder takes 1024 x 1024 inputs (every official config)."""


def build(cfg: ModelCfg) -> nn.Module:
    from no_time_to_train.checkpoints.loading import build_sam2
    from no_time_to_train.models.sam2_proposer import Sam2PointGridProposer

    inf = cfg.sam2_infer_cfgs
    # Built on the CPU; Lightning / the API move it to the run's device afterwards.
    sam2 = build_sam2(cfg.sam2_cfg_file, cfg.sam2_ckpt_path, device="cpu")
    return Sam2PointGridProposer(
        sam2, inf.points_per_side, inf.testing_point_bs, inf.iou_thr, add_no_mem_embed=inf.add_no_mem_embed,
        decoder_chunk=cfg.compute_cfgs.decoder_chunk, **plugin_args(cfg),
    )  # fmt: skip


def checkpoint_problem(cfg: ModelCfg, flags: Mapping[str, str]) -> str | None:
    from no_time_to_train.checkpoints.preflight import sam2_problem

    return sam2_problem(cfg.sam2_cfg_file, cfg.sam2_ckpt_path, flags)[0]


def write_stand_in(cfg: ModelCfg, folder: Path, seed: int) -> dict[str, str]:
    from no_time_to_train.checkpoints.registry import SAM2_CHECKPOINT_FILES, resolve_sam2_config
    from no_time_to_train.tools.random_checkpoints import write_random_sam2_checkpoint

    name = resolve_sam2_config(cfg.sam2_cfg_file)
    path = write_random_sam2_checkpoint(name, Path(folder) / SAM2_CHECKPOINT_FILES[name].file_name, seed)
    return {"sam2_ckpt_path": str(path)}


def box_segmenter(proposer: nn.Module) -> BoxPromptSegmenter | None:
    from no_time_to_train.models.box_prompt import Sam2BoxSegmenter

    sam2 = getattr(proposer, "sam2", None)
    return Sam2BoxSegmenter(sam2) if sam2 is not None else None


register_proposer(ProposerPlugin(
    name="sam2", build=build, input_size=lambda cfg: SAM2_INPUT_SIZE, checkpoint_problem=checkpoint_problem,
    write_stand_in=write_stand_in, box_segmenter=box_segmenter,
    summary="SAM2 (2.0 or 2.1, any size) prompted with a points_per_side^2 point grid",
))  # fmt: skip
