"""Helpers for tests and benchmarks that belong to no pipeline: the straightforward reference
implementation of the test-time scoring (method-spec §4.4), written for clarity, not memory.

Random-weight checkpoints in the official formats are written by
``no_time_to_train.tools.random_checkpoints``; oracle networks live in ``tests/oracle.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from no_time_to_train.models import matching
from no_time_to_train.models.proposals import Proposals
from no_time_to_train.pipeline.segmenter import Detections, ReferenceSegmenter


def straightforward_score_proposals(
    seg: ReferenceSegmenter,
    proposals: Proposals,
    feats: torch.Tensor,
    ori_size: tuple[int, int],
    pooling: str = "dense",
) -> tuple[Detections, int]:
    """Method-spec §4.4 as the reference computes it: dense pooling, every kept mask as float at
    full resolution at once, and a full-resolution ``M @ M^T`` per class for the merge.

    The reference against which ``ReferenceSegmenter.score_proposals`` (bounded memory, packed
    masks) is tested and benchmarked; ``pooling="separable"`` isolates the rest of the pipeline.
    Returns the detections and the number of masks that entered the merge."""
    cfg = seg.cfg
    with record_function("ntt::pooling"):
        low = proposals.logits > 0
        emb = matching.pool_mask_features(low, feats, mode=pooling)
        scores, labels = matching.label_and_score(emb, seg.memory.prototypes().to(emb))
    with record_function("ntt::nms"):
        keep = matching.class_aware_nms(
            matching.masks_to_boxes(low), proposals.iou, labels, cfg.nms_thr, 8 * cfg.num_out_instance
        )
        keep = keep[scores[keep] > 0]
    if keep.numel() == 0:
        return Detections.empty(ori_size, emb.shape[1], feats.device), 0
    with record_function("ntt::full_res"):
        up = F.interpolate(
            proposals.logits[keep][:, None],
            size=ori_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[:, 0]
        masks = (up > 0).float()
        del up
        nonempty = masks.flatten(1).sum(1) > 0
        keep, masks = keep[nonempty], masks[nonempty]
    scores, labels, emb = scores[keep], labels[keep], emb[keep]
    with record_function("ntt::merge"):
        new = scores.clone()
        for c in labels.unique().tolist():
            idx = (labels == c).nonzero(as_tuple=True)[0]
            m = masks[idx].flatten(1)
            inter = (m @ m.T).double()
            ios = torch.tril(inter / m.sum(1).double().clamp(min=1)[:, None], diagonal=-1)
            sem = (emb[idx] @ emb[idx].T).clamp(min=0).double()
            decay = (ios * sem).amax(dim=1).clamp(max=1.0)
            new[idx] = (scores[idx].double() * torch.sqrt(1.0 - decay)).to(scores.dtype)
        order = torch.sort(new, descending=True, stable=True).indices[: cfg.num_out_instance]
    out = masks[order] > 0
    return Detections(out, matching.masks_to_boxes(out), new[order], labels[order], emb[order]), len(masks)
