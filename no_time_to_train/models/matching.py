"""Labelling and scoring of proposal masks against class prototypes (method-spec §4.4).

Pure tensor functions. Conventions:
- masks are boolean or {0,1} tensors ``(N, H, W)``; boxes are inclusive pixel-index XYXY
  ``(N, 4)``, i.e. a one-pixel mask at (x, y) has box (x, y, x, y), an empty mask (0, 0, 0, 0);
- features are ``(h, w, D)`` maps; prototypes ``(C, D)`` are L2-normalised.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms


@functools.lru_cache(maxsize=16)
def _interp_matrix_cpu(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` matrix A with ``A @ x`` = 1-D bilinear antialiased resize of ``x``."""
    # Basis images two pixels wide: PyTorch's antialiased kernel returns zeros for width-1 inputs.
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 2)
    cols = F.interpolate(
        eye.contiguous(), size=(n_out, 2), mode="bilinear", align_corners=False, antialias=True
    )
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
    masks) keep a NaN score. The label comes from ``topk(sims, 1)`` as in the reference, not from
    ``max``: on a row of ties (every cosine clamped at 0) the two pick different classes, and such a
    proposal still takes part in the class-aware NMS before zero scores are dropped.
    """
    return label_and_score_sims((embeddings @ prototypes.T).clamp(min=0), embeddings)


NEGATIVE_SIGMA = 0.8  # the reference's temperature of the negative penalty


def negative_aware_similarity(
    embeddings: torch.Tensor, class_means: torch.Tensor, negative_means: torch.Tensor,
    negative_counts: torch.Tensor, sigma: float = NEGATIVE_SIGMA,
) -> torch.Tensor:  # fmt: skip
    """Per-class scores with negative references (the reference's formula).

    ``pos_c = max(0, f . normalize(m_c))`` with ``m_c`` the class's mask-weighted mean feature
    (``mem_feats_avg``: the class-level mean, not the mean of instance means used without
    negatives); ``neg_c = max_j max(0, f . normalize(n_{c,j}))`` over the class's negative instance
    means (0 for a class without negatives); ``score_c = pos_c * exp(-max(0, neg_c - pos_c) / sigma)``:
    a proposal is penalised only when it resembles a known false positive of class c more than
    class c itself.

    Args:
        embeddings: ``(N, D)`` normalised proposal features.
        class_means: ``(C, D)``; negative_means: ``(C, L, D)``; negative_counts: ``(C,)`` filled
            negative slots per class (slots ``0..count-1``).
    Returns:
        ``(N, C)`` scores in [0, 1].
    """
    pos = (embeddings @ F.normalize(class_means, dim=-1).T).clamp(min=0)
    c, length, d = negative_means.shape
    neg_all = (embeddings @ F.normalize(negative_means.reshape(c * length, d), dim=-1).T).clamp(min=0)
    valid = torch.arange(length, device=embeddings.device)[None, :] < negative_counts[:, None].to(
        embeddings.device
    )
    neg_all = neg_all.view(-1, c, length) * valid[None].to(neg_all.dtype)
    neg = neg_all.amax(dim=2) if length else torch.zeros_like(pos)
    return pos * torch.exp(-(neg - pos).clamp(min=0) / sigma)


def label_and_score_sims(sims: torch.Tensor, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label and score from ``(N, C)`` similarities, with ``label_and_score``'s rules (topk, NaN rows)."""
    top = torch.topk(sims, 1, dim=1)
    scores, labels = top.values[:, 0], top.indices[:, 0]
    scores = torch.where(torch.isnan(embeddings).any(dim=1), torch.full_like(scores, float("nan")), scores)
    return scores, labels


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Inclusive XYXY boxes of boolean masks ``(N, H, W)``; ``(0, 0, 0, 0)`` for empty masks."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), device=masks.device)
    u = masks.view(torch.uint8)  # max-reductions over bytes are much faster than any() on bool
    return _boxes_from_projections(u.amax(dim=2) > 0, u.amax(dim=1) > 0).float()


def _boxes_from_projections(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Inclusive XYXY long boxes from the row ``(N, H)`` and column ``(N, W)`` occupancy."""
    h, w = rows.shape[1], cols.shape[1]
    ar_h = torch.arange(h, device=rows.device)
    ar_w = torch.arange(w, device=rows.device)
    y1 = torch.where(rows, ar_h, h).amin(dim=1)
    y2 = torch.where(rows, ar_h, -1).amax(dim=1)
    x1 = torch.where(cols, ar_w, w).amin(dim=1)
    x2 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1)
    boxes[~rows.any(dim=1)] = 0
    return boxes


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
            logits[i : i + chunk, None].float(),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        out[i : i + chunk] = up[:, 0] > 0
    return out


def semantic_soft_merge(
    masks: torch.Tensor | CroppedMasks,
    scores: torch.Tensor,
    labels: torch.Tensor,
    embeddings: torch.Tensor,
    chunk: int = 64,
) -> torch.Tensor:
    """Decay each score by its overlap with higher-ranked masks of the same class.

    Masks must be given in rank order (descending SAM2 IoU after NMS). For mask i of class c,
    ``IoS_i = max_{j < i, label_j = c} |B_i ∩ B_j| / |B_i| * max(0, o_i · o_j)`` (0 if no such j)
    and the new score is ``s_i * sqrt(1 - IoS_i)``. Empty masks keep their score (the reference
    divides by zero there).

    Args:
        masks: ``(N, H, W)`` boolean full-resolution masks, or the same as :class:`CroppedMasks`.
        scores: ``(N,)``; labels: ``(N,)``; embeddings: ``(N, D)`` normalised.
        chunk: the exact intersection counts (:meth:`CroppedMasks.intersections`) work on at most
            ``chunk`` megapixels' worth of float masks at once (``chunk`` 1024 x 1024 masks),
            whatever the image size, so that large images do not need more memory.
    Returns:
        ``(N,)`` new scores.
    """
    if isinstance(masks, torch.Tensor):
        masks = CroppedMasks.from_masks(masks)
    new_scores = scores.clone()
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero(as_tuple=True)[0]
        if idx.numel() < 2:
            continue
        inter = masks.intersections(idx, max_floats=chunk * 1024 * 1024)  # j < i only
        area = masks.areas[idx].double()
        ios = inter / area.clamp(min=1)[:, None]
        sem = (embeddings[idx] @ embeddings[idx].T).clamp(min=0).double()
        decay = (ios * sem).amax(dim=1).clamp(max=1.0)
        new_scores[idx] = (scores[idx].double() * torch.sqrt(1.0 - decay)).to(scores.dtype)
    return new_scores


# --------------------------------------------------------------------------- full-resolution masks


def _pack_bits(masks: torch.Tensor) -> torch.Tensor:
    """``(..., W)`` bool with ``W % 8 == 0`` -> ``(..., W / 8)`` uint8; bit k of byte c is pixel 8c + k."""
    b = masks.contiguous().view(torch.uint8).view(*masks.shape[:-1], -1, 8)
    out = b[..., 0].clone()
    for k in range(1, 8):
        out |= b[..., k] << k
    return out


@functools.lru_cache(maxsize=8)
def _unpack_table(device: torch.device) -> torch.Tensor:
    """``(256,)`` int64 whose 8 bytes (in memory order) are the bits 0..7 of the index."""
    values = [sum(((v >> k) & 1) << (8 * k) for k in range(8)) for v in range(256)]
    table = torch.tensor(values, dtype=torch.int64)
    assert table[1:2].view(torch.uint8)[0] == 1, "bit packing assumes a little-endian machine"
    return table.to(device)


def _unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` uint8 from :func:`_pack_bits` -> ``(..., 8 C)`` uint8 values 0/1."""
    words = _unpack_table(packed.device).index_select(0, packed.reshape(-1).long()).view(packed.shape)
    return words.view(torch.uint8).view(*packed.shape[:-1], 8 * packed.shape[-1])


FULL_RES_FLOATS = 2**25
"""At most this many full-resolution float pixels (128 MiB) when upsampling proposals: 32 masks of
a 1024 x 1024 image, one mask of a 6000 x 4000 photo."""


@dataclass
class CroppedMasks:
    """Boolean full-resolution masks, each kept cropped to its own box, 8 pixels per byte.

    Up to ``8 * num_out_instance`` masks survive NMS; at full resolution as dense bool they take
    ``N * H * W`` bytes (800 masks of a 1024x1024 image: 840 MB). Stored here, a mask costs an
    eighth of its box. Areas, boxes and intersection counts are exactly those of the dense masks.

    ``size`` (H, W); ``boxes`` (N, 4) long, inclusive XYXY, (0, 0, 0, 0) for an empty mask;
    ``areas`` (N,) long pixel counts; ``bits[i]`` (y2 - y1 + 1, x2 // 8 - x1 // 8 + 1) uint8: rows
    y1..y2 of mask i, pixels from ``8 * (x1 // 8)`` on, packed by :func:`_pack_bits`.
    """

    size: tuple[int, int]
    boxes: torch.Tensor
    areas: torch.Tensor
    bits: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.bits)

    @staticmethod
    def from_masks(masks: torch.Tensor) -> CroppedMasks:
        """From dense ``(N, H, W)`` boolean masks."""
        n, h, w = masks.shape
        u = masks.view(torch.uint8)
        row_counts = u.sum(dim=2, dtype=torch.int32)
        boxes = _boxes_from_projections(row_counts > 0, u.amax(dim=1) > 0)
        padded = masks.new_zeros((n, h, (w + 7) // 8 * 8))
        padded[..., :w] = masks
        packed = _pack_bits(padded)
        bits = [
            packed[i, y1 : y2 + 1, x1 // 8 : x2 // 8 + 1].clone()
            for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())
        ]
        return CroppedMasks((h, w), boxes, row_counts.sum(dim=1, dtype=torch.int64), bits)

    @staticmethod
    def from_logits(logits: torch.Tensor, size: tuple[int, int], chunk: int = 32) -> CroppedMasks:
        """``(N, s, s)`` logits -> masks at ``size`` (H, W): bilinear, antialias, threshold > 0.

        The same masks as :func:`upsample_logits_to_masks`; at most ``chunk`` masks, and at most
        ``FULL_RES_FLOATS`` pixels, exist at full resolution (as float) at once.
        """
        size = (int(size[0]), int(size[1]))
        chunk = max(1, min(chunk, FULL_RES_FLOATS // max(1, size[0] * size[1])))
        parts = [
            CroppedMasks.from_masks(upsample_logits_to_masks(logits[i : i + chunk], size, chunk))
            for i in range(0, logits.shape[0], chunk)
        ]
        if not parts:
            empty = torch.zeros(0, dtype=torch.long, device=logits.device)
            return CroppedMasks(size, empty.view(0, 4), empty, [])
        return CroppedMasks(
            size,
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.areas for p in parts]),
            [b for p in parts for b in p.bits],
        )

    def select(self, index: torch.Tensor) -> CroppedMasks:
        """The masks at ``index`` (long indices or a bool mask), in that order."""
        if index.dtype == torch.bool:
            index = index.nonzero(as_tuple=True)[0]
        return CroppedMasks(
            self.size, self.boxes[index], self.areas[index], [self.bits[i] for i in index.tolist()]
        )

    def window(
        self, index: torch.Tensor, box: tuple[int, int, int, int], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The masks at ``index`` inside the window ``box = (x0, y0, x1, y1)`` (exclusive ends), as
        ``(k, y1 - y0, x1 - x0)`` uint8 0/1 values (written into ``out`` if given)."""
        x0, y0, x1, y1 = box
        shape = (index.numel(), y1 - y0, x1 - x0)
        if out is None:
            out = torch.zeros(shape, dtype=torch.uint8, device=self.areas.device)
        else:
            out = out.view(shape).zero_()
        rows = zip(index.tolist(), self.boxes[index].tolist(), self.areas[index].tolist(), strict=True)
        for r, (i, (bx1, by1, bx2, by2), area) in enumerate(rows):
            ya, yb, xa, xb = max(y0, by1), min(y1, by2 + 1), max(x0, bx1), min(x1, bx2 + 1)
            if ya >= yb or xa >= xb or area == 0:
                continue
            origin = bx1 // 8 * 8
            c0, c1 = (xa - origin) // 8, (xb - origin + 7) // 8
            vals = _unpack_bits(self.bits[i][ya - by1 : yb - by1, c0:c1])
            off = xa - origin - 8 * c0
            out[r, ya - y0 : yb - y0, xa - x0 : xb - x0] = vals[:, off : off + xb - xa]
        return out

    def dense(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Dense ``(k, H, W)`` boolean masks (all, or those at ``index``)."""
        if index is None:
            index = torch.arange(len(self), device=self.areas.device)
        h, w = self.size
        return self.window(index, (0, 0, w, h)).view(torch.bool)

    def intersections(self, index: torch.Tensor, max_floats: int = 2**25, block: int = 128) -> torch.Tensor:
        """``(n, n)`` float64 pixel counts ``|B_i ∩ B_j|`` for ``j < i`` (zero elsewhere) among the
        masks at ``index``.

        Horizontal strips of the masks' common box, each holding only the masks whose box meets
        the strip (cropped to their x-range), are multiplied as 0/1 float matrices, ``block`` rows
        at a time and only below the diagonal; each mask is unpacked once per strip and a strip
        holds at most ``max_floats`` values (the buffers are reused from strip to strip). Strips hold fewer than 2**24 pixels per mask, so their
        float32 sums are exact; strips add up in float64.
        """
        n = index.numel()
        device = self.areas.device
        inter = torch.zeros((n, n), dtype=torch.float64, device=device)
        boxes = self.boxes[index].tolist()
        live = [k for k, a in enumerate(self.areas[index].tolist()) if a > 0]
        if len(live) < 2:
            return inter
        ux0, uy0 = min(boxes[k][0] for k in live), min(boxes[k][1] for k in live)
        ux1, uy1 = max(boxes[k][2] for k in live) + 1, max(boxes[k][3] for k in live) + 1
        width = ux1 - ux0
        rows = max(1, min((2**24 - 1) // width, max_floats // (len(live) * width)))
        capacity = len(live) * min(rows, uy1 - uy0) * width
        buf_u8 = torch.empty(capacity, dtype=torch.uint8, device=device)
        buf_f32 = torch.empty(capacity, dtype=torch.float32, device=device)
        for r0 in range(uy0, uy1, rows):
            r1 = min(r0 + rows, uy1)
            part = [k for k in live if boxes[k][1] < r1 and boxes[k][3] >= r0]
            if len(part) < 2:
                continue
            x0, x1 = min(boxes[k][0] for k in part), max(boxes[k][2] for k in part) + 1
            size = len(part) * (r1 - r0) * (x1 - x0)
            sel = torch.tensor(part, device=device)
            u8 = self.window(index[sel], (x0, r0, x1, r1), out=buf_u8[:size])
            a = buf_f32[:size].view(len(part), -1)
            a.copy_(u8.view(len(part), -1))
            for i0 in range(0, len(part), block):  # lower block triangle only: j <= i
                rows_i = sel[i0 : i0 + block]
                prod = a[i0 : i0 + block] @ a[: i0 + block].T
                inter[rows_i[:, None], sel[None, : i0 + block]] += prod.double()
        return torch.tril(inter, diagonal=-1)
