"""The per-class memory bank: reference features in, class statistics out (method-spec §3.3).

Everything lives in registered buffers so that ``.to()``, DDP and checkpoints carry the bank.

Storage after ``fill_memory`` is compact: only reference patches with a positive mask weight are
kept (every statistic below is mask-weighted or restricted to ``mask > 0``, so the other patches
never contribute), in half precision; statistics are computed in float32. After
``postprocess_memory`` the raw patches are dropped: test and vis_memory need only the statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RAW_BUFFERS = ("mem_fg_feats", "mem_fg_weights", "mem_fg_slots")


class MemoryBank(nn.Module):
    """Buffers (C classes, K shots, D feature dim):

    - ``mem_cat_ids`` (C,) int64: real category id of each class index (-1 = unset).
    - ``mem_fill_counts`` (C,) int64: filled shots per class.
    - ``mem_fg_feats`` (N, D) float16, ``mem_fg_weights`` (N,) float32, ``mem_fg_slots`` (N,)
      int64: foreground patches of all references; slot = c * K + k.
    - ``mem_feats_ins_avg`` (C, K, D): mask-weighted mean of each reference instance.
    - ``mem_feats_avg`` (C, D): mask-weighted mean over all patches of a class.
    - ``mem_feats_centers`` (C, kmeans_k, D): normalised cosine k-means centres.
    - ``mem_ins_sim_avg`` (C,): mean of (1 + cos(a_k, b_k)) / 2, a_k = mean of shot k's foreground
      patches, b_k = mean of the other shots' (1.0 when K = 1, where the reference gives NaN).
    - ``mem_pca_mean`` (C, D), ``mem_pca_components`` (C, n_pca, D): per-class PCA.
    - ``mem_postprocessed`` (1,) bool.
    """

    def __init__(
        self, category_num: int, length: int, feat_dim: int, kmeans_k: int = 4, n_pca_components: int = 3
    ):
        super().__init__()
        self.category_num, self.length, self.feat_dim = category_num, length, feat_dim
        self.kmeans_k, self.n_pca_components = kmeans_k, n_pca_components
        c, k, d = category_num, length, feat_dim
        self.register_buffer("mem_cat_ids", torch.full((c,), -1, dtype=torch.long))
        self.register_buffer("mem_fill_counts", torch.zeros(c, dtype=torch.long))
        self.register_buffer("mem_fg_feats", torch.zeros((0, d), dtype=torch.float16))
        self.register_buffer("mem_fg_weights", torch.zeros(0))
        self.register_buffer("mem_fg_slots", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mem_feats_ins_avg", torch.zeros((c, k, d)))
        self.register_buffer("mem_feats_avg", torch.zeros((c, d)))
        self.register_buffer("mem_feats_centers", torch.zeros((c, kmeans_k, d)))
        self.register_buffer("mem_ins_sim_avg", torch.zeros(c))
        self.register_buffer("mem_pca_mean", torch.zeros((c, d)))
        self.register_buffer("mem_pca_components", torch.zeros((c, n_pca_components, d)))
        self.register_buffer("mem_postprocessed", torch.zeros(1, dtype=torch.bool))

    # ------------------------------------------------------------------ state
    @property
    def is_filled(self) -> bool:
        return bool(self.mem_fill_counts.sum() > 0)

    @property
    def is_postprocessed(self) -> bool:
        return bool(self.mem_postprocessed.item())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # The packed foreground buffers have a data-dependent length: adopt the stored one.
        for name in RAW_BUFFERS:
            key = prefix + name
            if key in state_dict:
                mine = getattr(self, name)
                setattr(self, name, mine.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ fill
    @torch.no_grad()
    def fill_packed(
        self,
        class_idx: torch.Tensor,
        slot_idx: torch.Tensor,
        feats: list[torch.Tensor],
        weights: list[torch.Tensor],
    ) -> None:
        """Store all references at once (all ranks' items, in dataset order).

        Args:
            class_idx, slot_idx: ``(B,)`` class index and shot slot of each reference.
            feats: B tensors ``(n_i, D)``, the patches of reference i with a positive mask weight.
            weights: B tensors ``(n_i,)``, their mask weights in (0, 1].
        """
        if self.is_filled:
            raise RuntimeError("memory bank is already filled")
        if (
            (class_idx < 0) | (class_idx >= self.category_num) | (slot_idx < 0) | (slot_idx >= self.length)
        ).any():
            raise ValueError("class or slot index out of range of the memory bank")
        sizes = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        slots = torch.repeat_interleave(class_idx * self.length + slot_idx, sizes)
        dev = self.mem_fill_counts.device
        d = self.feat_dim
        self.mem_fg_feats = torch.cat([f.reshape(-1, d) for f in feats]).to(dev, torch.float16)
        self.mem_fg_weights = torch.cat([w.reshape(-1) for w in weights]).float().to(dev)
        self.mem_fg_slots = slots.to(dev)
        self.mem_fill_counts.copy_(torch.bincount(class_idx, minlength=self.category_num).to(dev))

    def class_weight(self, c: int) -> float:
        """Total mask weight stored for class ``c`` (0 means no usable reference pixel)."""
        return float(self.mem_fg_weights[self.mem_fg_slots // self.length == c].sum())

    # ------------------------------------------------------------------ postprocess
    @torch.no_grad()
    def postprocess(self, seed: int = 0) -> None:
        """Instance means, class means, k-means centres, PCA; then drop the raw patches.

        Deterministic: k-means initialisation uses its own generator seeded with ``seed``.
        Idempotent: a postprocessed bank is left unchanged (the reference doubled its means).
        """
        if self.is_postprocessed:
            return
        c_num, k_num = self.category_num, self.length
        feats = self.mem_fg_feats.float()
        w = self.mem_fg_weights
        slots = self.mem_fg_slots
        n_slots = c_num * k_num
        wsum = torch.zeros(n_slots, device=feats.device).index_add_(0, slots, w)
        fsum = torch.zeros((n_slots, self.feat_dim), device=feats.device).index_add_(
            0, slots, w[:, None] * feats
        )
        self.mem_feats_ins_avg.copy_((fsum / wsum.clamp(min=1e-12)[:, None]).view(c_num, k_num, -1))
        cls_w = wsum.view(c_num, k_num).sum(1)
        cls_f = fsum.view(c_num, k_num, -1).sum(1)
        self.mem_feats_avg.copy_(cls_f / cls_w.clamp(min=1e-12)[:, None])

        gen = torch.Generator().manual_seed(seed)
        classes = slots // k_num
        for c in range(c_num):
            sel = classes == c
            x = feats[sel]
            if x.shape[0] == 0:
                continue
            self.mem_ins_sim_avg[c] = _inter_shot_similarity(x, slots[sel] % k_num)
            self.mem_feats_centers[c] = cosine_kmeans(x, self.kmeans_k, generator=gen)
            mean, comps = pca(x, self.n_pca_components)
            self.mem_pca_mean[c] = mean
            self.mem_pca_components[c] = comps
        for name in RAW_BUFFERS:
            buf = getattr(self, name)
            setattr(self, name, buf.new_empty((0, *buf.shape[1:])))
        self.mem_postprocessed.fill_(True)

    def prototypes(self) -> torch.Tensor:
        """``(C, D)`` normalised mean of the instance means of each class (the matching prototypes)."""
        from no_time_to_train.models.matching import class_prototypes

        return class_prototypes(self.mem_feats_ins_avg, self.mem_fill_counts)


def _inter_shot_similarity(x: torch.Tensor, shot: torch.Tensor) -> torch.Tensor:
    shots = shot.unique()
    if shots.numel() < 2:
        return torch.tensor(1.0)
    vals = []
    for k in shots:
        a = x[shot == k].mean(0)
        b = x[shot != k].mean(0)
        vals.append((1 + F.cosine_similarity(a, b, dim=0)) / 2)
    return torch.stack(vals).mean()


def cosine_kmeans(
    x: torch.Tensor, k: int, iters: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cosine k-means: assign by max cosine similarity, update with the mean of the raw features.

    Args:
        x: ``(N, D)`` float32 features.
    Returns:
        ``(k, D)`` L2-normalised centres. An empty cluster keeps its previous centre (the reference
        produces NaN there); with fewer points than ``k`` points are reused.
    """
    n = x.shape[0]
    if n >= k:
        init = torch.randperm(n, generator=generator)[:k]
    else:
        init = torch.randint(n, (k,), generator=generator)
    centers = x[init.to(x.device)].clone()
    xn = F.normalize(x, dim=-1)
    for _ in range(iters):
        assign = (xn @ F.normalize(centers, dim=-1).T).argmax(dim=1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centers)
        if torch.equal(new, centers):
            break
        centers = new
    return F.normalize(centers, dim=-1)


def pca(x: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class PCA with scikit-learn (as the reference). Returns ``mean_ (D,)`` and
    ``components_ (n_components, D)``; rows beyond the data's rank are zero."""
    from sklearn.decomposition import PCA

    data = x.double().cpu().numpy()
    n_fit = min(n_components, data.shape[0], data.shape[1])
    comps = np.zeros((n_components, data.shape[1]))
    if n_fit >= 1 and data.shape[0] >= 2:
        model = PCA(n_components=n_fit, random_state=0).fit(data)
        comps[:n_fit] = model.components_
        mean = model.mean_
    else:
        mean = data.mean(axis=0)
    return torch.from_numpy(mean).to(x), torch.from_numpy(comps).to(x)
