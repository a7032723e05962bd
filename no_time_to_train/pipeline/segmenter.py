"""The method: reference encoding for the memory bank, and test-time labelling of SAM2 proposals.

Composes injected parts (a patch-feature encoder, a proposer, a ``MemoryBank``); pure torch, no I/O.

Encoder contract: ``encoder(images)`` with ``images (B, 3, H, W)`` float in [0, 1] returns patch
features ``(B, g, g, D)`` (DINOv2: resized to 518, g = 37). Proposer contract:
``proposer(image) -> Proposals`` for ``image (1, 3, S, S)``, already filtered by predicted IoU.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from no_time_to_train.config import ComputeCfg, InferenceCfg
from no_time_to_train.models import matching
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.models.proposals import Proposals


@dataclass
class Detections:
    """Per-image output at the original resolution.

    ``masks`` (N, H, W) bool; ``boxes`` (N, 4) inclusive pixel XYXY from the masks; ``scores`` (N,);
    ``labels`` (N,) class *indices* (see the dataset's ``cat_inds_to_ids`` for category ids);
    ``embeddings`` (N, D) normalised mask embeddings. Sorted by descending score.
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor

    def __len__(self) -> int:
        return self.scores.shape[0]

    @staticmethod
    def empty(size: tuple[int, int], feat_dim: int, device: torch.device) -> Detections:
        return Detections(
            masks=torch.zeros((0, *size), dtype=torch.bool, device=device),
            boxes=torch.zeros((0, 4), device=device),
            scores=torch.zeros(0, device=device),
            labels=torch.zeros(0, dtype=torch.long, device=device),
            embeddings=torch.zeros((0, feat_dim), device=device),
        )


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ReferenceSegmenter(nn.Module):
    """Training-free reference-based instance segmentation (the reference's
    ``Sam2MatchingBaselineNoAMG``)."""

    def __init__(
        self,
        memory: MemoryBank,
        encoder: nn.Module | None = None,
        proposer: nn.Module | None = None,
        infer_cfg: InferenceCfg | None = None,
        compute_cfg: ComputeCfg | None = None,
        precision: str = "fp32",
        negatives: MemoryBank | None = None,
    ):
        """``precision`` ("fp32", "bf16", "fp16") autocasts the network forward passes only; the
        matching steps always run in float32 on their float32 outputs. ``negatives``: a
        postprocessed bank of negative references per class; when given, proposals are scored
        with ``matching.negative_aware_similarity`` (``with_negative_refs``)."""
        super().__init__()
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}")
        self.precision = precision
        self.memory = memory
        self.negatives = negatives
        self.encoder = encoder
        self.proposer = proposer
        self.cfg = infer_cfg or InferenceCfg()
        self.compute = compute_cfg or ComputeCfg()

    # ------------------------------------------------------------------ references
    @torch.no_grad()
    def encode_references(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features and mask weights of reference crops.

        Args:
            images: ``(B, 3, S, S)`` crops in [0, 1]; masks: ``(B, S, S)`` soft masks in [0, 1].
        Returns:
            ``feats (B, P, D)`` and ``weights (B, P)``, P = g*g. The mask is sampled on the patch
            grid with nearest interpolation (the top-left pixel of each patch), as the reference.
        """
        with self._autocast(images.device):
            feats = self.encoder(images)
        feats = feats.float()
        b, g, _, d = feats.shape
        weights = F.interpolate(masks[:, None].float(), size=(g, g), mode="nearest")[:, 0]
        return feats.reshape(b, g * g, d), weights.reshape(b, g * g)

    # ------------------------------------------------------------------ test
    @torch.no_grad()
    def predict(self, image: torch.Tensor, ori_size: tuple[int, int]) -> Detections:
        """``image`` (1, 3, S, S) in [0, 1] (the target squashed to S x S); ``ori_size`` (H, W)."""
        if not self.memory.is_postprocessed:
            raise RuntimeError("the memory bank is not postprocessed; run postprocess_memory first")
        with self._autocast(image.device):
            proposals = self.proposer(image)
            if len(proposals) == 0:
                return Detections.empty(ori_size, self.memory.feat_dim, image.device)
            with record_function("ntt::dinov2"):
                feats = self.encoder(image)[0]
        proposals = Proposals(proposals.logits.float(), proposals.iou.float(), proposals.points)
        return self.score_proposals(proposals, feats.float(), ori_size)

    def _autocast(self, device: torch.device) -> AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def score_proposals(
        self, proposals: Proposals, feats: torch.Tensor, ori_size: tuple[int, int]
    ) -> Detections:
        """Label, suppress and re-score proposals (method-spec §4.4 steps 2-10).

        Args:
            proposals: low-resolution logits and SAM2 IoUs; feats: ``(g, g, D)`` target features.

        Full-resolution masks are made in chunks and kept cropped to their boxes, bit-packed
        (``matching.CroppedMasks``); only the final ``num_out_instance`` are expanded to dense
        ``(N, H, W)`` masks.
        """
        cfg = self.cfg
        device = feats.device
        with record_function("ntt::pooling"):
            low_masks = proposals.logits > 0
            emb = matching.pool_mask_features(low_masks, feats, mode=self.compute.pooling)
            if self.negatives is None:
                scores, labels = matching.label_and_score(emb, self.memory.prototypes().to(emb))
            else:
                neg = self.negatives
                sims = matching.negative_aware_similarity(
                    emb, self.memory.mem_feats_avg.to(emb), neg.mem_feats_ins_avg.to(emb), neg.mem_fill_counts
                )
                scores, labels = matching.label_and_score_sims(sims, emb)
        with record_function("ntt::nms"):
            boxes = matching.masks_to_boxes(low_masks)
            keep = matching.class_aware_nms(
                boxes, proposals.iou, labels, cfg.nms_thr, 8 * cfg.num_out_instance
            )
            keep = keep[scores[keep] > 0]  # also drops NaN scores of empty masks
        if keep.numel() == 0:
            return Detections.empty(ori_size, emb.shape[1], device)
        with record_function("ntt::full_res"):
            masks = matching.CroppedMasks.from_logits(proposals.logits[keep], ori_size)
            # A mask can vanish when upsampled; it cannot match anything and the IoS is undefined.
            nonempty = masks.areas > 0
            keep, masks = keep[nonempty], masks.select(nonempty)
        scores, labels, emb = scores[keep], labels[keep], emb[keep]
        with record_function("ntt::merge"):
            scores = matching.semantic_soft_merge(masks, scores, labels, emb, chunk=self.compute.merge_chunk)
            order = torch.sort(scores, descending=True, stable=True).indices[: cfg.num_out_instance]
        with record_function("ntt::full_res"):
            dense = masks.dense(order)
        return Detections(
            masks=dense,
            boxes=masks.boxes[order].float(),
            scores=scores[order],
            labels=labels[order],
            embeddings=emb[order],
        )
