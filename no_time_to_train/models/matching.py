"""Labelling and scoring of proposal masks against class prototypes (method-spec §4.4).

Pure tensor functions. Conventions:
- masks are boolean or {0,1} tensors ``(N, H, W)``; boxes are inclusive pixel-index XYXY
  ``(N, 4)``, i.e. a one-pixel mask at (x, y) has box (x, y, x, y), an empty mask (0, 0, 0, 0);
- features are ``(h, w, D)`` maps; prototypes ``(C, D)`` are L2-normalised.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms


@functools.lru_cache(maxsize=16)
def _interp_matrix_cpu(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` matrix A with ``A @ x`` = 1-D bilinear antialiased resize of ``x``."""
    # Basis images two pixels wide: PyTorch's antialiased kernel returns zeros for width-1 inputs.
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 2)
    cols = F.interpolate(eye.contiguous(), size=(n_out, 2), mode="bilinear", align_corners=False, antialias=True)
    return cols[:, 0, :, 0].T.contiguous()


def interp_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _interp_matrix_cpu(n_in, n_out).to(device=device, dtype=dtype)


def upsample_features(feats: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialias, align_corners=False) resize of ``(h, w, D)`` to ``(size, size, D)``."""
    x = feats.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0)


def pool_mask_features(
    masks: torch.Tensor, feats: torch.Tensor, mode: str = "separable", chunk: int = 256
) -> torch.Tensor:
    """Mean of the upsampled feature map under each mask, L2-normalised.

    Args:
        masks: ``(N, S, S)`` boolean proposal masks at the proposal resolution (256 for SAM2).
        feats: ``(h, w, D)`` patch features (37x37 for DINOv2 at 518).
        mode: ``"dense"`` upsamples ``feats`` to ``S x S`` and does an ``(N, S*S) @ (S*S, D)``
            product, as the reference; ``"separable"`` gives the same numbers by pulling each mask
            back onto the ``h x w`` grid with the (separable) bilinear interpolation matrices:
            ``sum_q M[q] (Uy G Ux^T)[q] = sum_p (Uy^T M Ux)[p] G[p]``.
    Returns:
        ``(N, D)`` normalised embeddings; rows of empty masks are NaN (0/0), like the reference,
        so that they are dropped by the ``score > 0`` filter.
    """
    n, s, _ = masks.shape
    h, w, d = feats.shape
    out = feats.new_empty((n, d), dtype=torch.float32)
    if mode == "dense":
        flat = upsample_features(feats, s).reshape(s * s, d)
    else:
        ay = interp_matrix(h, s, feats.device, torch.float32)  # (S, h)
        ax = interp_matrix(w, s, feats.device, torch.float32)  # (S, w)
        flat = feats.reshape(h * w, d).float()
    for i in range(0, n, chunk):
        m = masks[i : i + chunk].float()
        area = m.sum(dim=(1, 2))
        if mode == "dense":
            summed = m.reshape(m.shape[0], s * s) @ flat
        else:
            weights = ay.T @ m @ ax  # (n, h, w)
            summed = weights.reshape(m.shape[0], h * w) @ flat
        out[i : i + chunk] = F.normalize(summed / area[:, None], dim=-1)
    return out


def class_prototypes(instance_means: torch.Tensor, fill_counts: torch.Tensor) -> torch.Tensor:
    """``t_c = normalize(mean_k mu_{c,k})`` over the filled slots of each class.

    Args:
        instance_means: ``(C, K, D)`` mask-weighted mean feature of each reference instance.
        fill_counts: ``(C,)`` number of filled slots per class (slots ``0..count-1``).
    Returns:
        ``(C, D)`` L2-normalised prototypes. The reference divides by K; when every slot is
        filled (always, after a successful fill) the normalised result is identical.
    """
    k = instance_means.shape[1]
    filled = torch.arange(k, device=instance_means.device)[None, :] < fill_counts[:, None]
    summed = (instance_means * filled[..., None]).sum(dim=1)
    return F.normalize(summed / fill_counts.clamp(min=1)[:, None], dim=-1)


def label_and_score(embeddings: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity clamped at 0; label = argmax class, score = max similarity.

    ``embeddings`` ``(N, D)`` and ``prototypes`` ``(C, D)`` are normalised. NaN rows (empty
    masks) keep a NaN score.
    """
    sims = (embeddings @ prototypes.T).clamp(min=0)
    scores, labels = sims.max(dim=1)
    scores = torch.where(torch.isnan(embeddings).any(dim=1), torch.full_like(scores, float("nan")), scores)
    return scores, labels


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Inclusive XYXY boxes of boolean masks ``(N, H, W)``; ``(0, 0, 0, 0)`` for empty masks."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), device=masks.device)
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, h).amin(dim=1)
    y2 = torch.where(rows, ar_h, -1).amax(dim=1)
    x1 = torch.where(cols, ar_w, w).amin(dim=1)
    x2 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1)
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes.float()


def class_aware_nms(
    boxes: torch.Tensor, rank_scores: torch.Tensor, labels: torch.Tensor, iou_thr: float, max_keep: int
) -> torch.Tensor:
    """Indices kept by per-class box NMS, ordered by descending ``rank_scores``, at most ``max_keep``.

    The reference ranks by SAM2's predicted IoU (not the semantic score); pass that as
    ``rank_scores``.
    """
    keep = batched_nms(boxes.float(), rank_scores.float(), labels, iou_thr)
    return keep[:max_keep]


def upsample_logits_to_masks(logits: torch.Tensor, size: tuple[int, int], chunk: int = 32) -> torch.Tensor:
    """``(N, s, s)`` logits -> ``(N, H, W)`` boolean masks (bilinear, antialias, threshold > 0).

    Done in chunks so that at most ``chunk`` float masks exist at full resolution at once.
    """
    n = logits.shape[0]
    out = torch.empty((n, *size), dtype=torch.bool, device=logits.device)
    for i in range(0, n, chunk):
        up = F.interpolate(
            logits[i : i + chunk, None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
        )
        out[i : i + chunk] = up[:, 0] > 0
    return out


def pairwise_intersections(masks: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``(N, N)`` pixel counts ``|B_i ∩ B_j|`` of boolean masks ``(N, H, W)``.

    The masks are cropped to their common bounding box and multiplied chunk by chunk, so at most
    ``2 * chunk`` float masks exist at once. float32 sums of 0/1 values are exact below 2**24
    pixels per mask; larger crops use float64.
    """
    n = masks.shape[0]
    if n == 0:
        return torch.zeros((0, 0), dtype=torch.float64, device=masks.device)
    union = masks.any(dim=0)
    ys = union.any(dim=1).nonzero()
    xs = union.any(dim=0).nonzero()
    if ys.numel() == 0:
        return torch.zeros((n, n), dtype=torch.float64, device=masks.device)
    crop = masks[:, ys[0, 0] : ys[-1, 0] + 1, xs[0, 0] : xs[-1, 0] + 1].reshape(n, -1)
    dtype = torch.float32 if crop.shape[1] < 2**24 else torch.float64
    inter = torch.empty((n, n), dtype=torch.float64, device=masks.device)
    for i in range(0, n, chunk):
        a = crop[i : i + chunk].to(dtype)
        for j in range(0, n, chunk):
            b = crop[j : j + chunk].to(dtype)
            inter[i : i + chunk, j : j + chunk] = (a @ b.T).double()
    return inter


def semantic_soft_merge(
    masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """Decay each score by its overlap with higher-ranked masks of the same class.

    Masks must be given in rank order (descending SAM2 IoU after NMS). For mask i of class c,
    ``IoS_i = max_{j < i, label_j = c} |B_i ∩ B_j| / |B_i| * max(0, o_i · o_j)`` (0 if no such j)
    and the new score is ``s_i * sqrt(1 - IoS_i)``. Empty masks keep their score (the reference
    divides by zero there).

    Args:
        masks: ``(N, H, W)`` boolean full-resolution masks.
        scores: ``(N,)``; labels: ``(N,)``; embeddings: ``(N, D)`` normalised.
    Returns:
        ``(N,)`` new scores.
    """
    new_scores = scores.clone()
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero(as_tuple=True)[0]
        if idx.numel() < 2:
            continue
        m = masks[idx]
        inter = pairwise_intersections(m, chunk)
        area = m.reshape(idx.numel(), -1).sum(dim=1).double()
        ios = inter / area.clamp(min=1)[:, None]
        ios = torch.tril(ios, diagonal=-1)  # only j < i (higher-ranked)
        sem = (embeddings[idx] @ embeddings[idx].T).clamp(min=0).double()
        decay = (ios * sem).amax(dim=1).clamp(max=1.0)
        new_scores[idx] = (scores[idx].double() * torch.sqrt(1.0 - decay)).to(scores.dtype)
    return new_scores
