"""Memory bank: fill storage, postprocess statistics with known answers, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from no_time_to_train.models.memory_bank import MemoryBank, cosine_kmeans
from no_time_to_train.pipeline.references import crop_window
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter


def _filled_bank(c=2, k=2, p=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(c * k, p, d, generator=g)
    masks = (torch.rand(c * k, p, generator=g) > 0.4).float() * torch.rand(c * k, p, generator=g)
    masks[:, 0] = 1.0  # every reference has a foreground patch
    bank = MemoryBank(c, k, d, kmeans_k=2, n_pca_components=2)
    cls = torch.arange(c).repeat_interleave(k)
    slot = torch.arange(k).repeat(c)
    fg = masks > 0
    bank.fill_packed(
        cls,
        slot,
        [f[m].half() for f, m in zip(feats, fg, strict=False)],
        [w[m] for w, m in zip(masks, fg, strict=False)],
    )
    return bank, feats.half().float(), masks


def test_crop_window_square_with_context_and_clipping():
    assert crop_window([100, 100, 40, 20], 640, 480, 0.2) == (96, 86, 144, 134)  # side 48 around (120, 110)
    assert crop_window([0, 0, 50, 50], 60, 40, 0.2) == (0, 0, 55, 40)  # clipped, non-square


def test_reference_mask_sampled_at_top_left_pixel_of_each_patch():
    class Enc(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 37, 37, 3)

    seg = ReferenceSegmenter(MemoryBank(1, 1, 3), encoder=Enc())
    mask = torch.zeros(1, 518, 518)
    mask[0, 14, 28] = 0.7  # top-left pixel of patch (1, 2)
    mask[0, 15, 29] = 1.0  # inside the same patch but not its top-left pixel
    _, w = seg.encode_references(torch.zeros(1, 3, 518, 518), mask)
    assert w.shape == (1, 1369)
    assert w[0, 1 * 37 + 2].item() == pytest.approx(0.7) and w.sum().item() == pytest.approx(0.7)


def test_fill_keeps_only_foreground_patches():
    bank, _, masks = _filled_bank()
    assert bank.mem_fg_feats.shape[0] == int((masks > 0).sum())
    assert bank.mem_fg_feats.dtype == torch.float16
    assert bank.mem_fill_counts.tolist() == [2, 2]


def test_postprocess_means_match_formulas():
    bank, feats, masks = _filled_bank()
    bank.postprocess()
    c, k, d = 2, 2, 4
    f = feats.view(c, k, -1, d)
    m = masks.view(c, k, -1)
    ins = (m[..., None] * f).sum(2) / m.sum(2)[..., None]
    cls = (m[..., None] * f).sum((1, 2)) / m.sum((1, 2))[..., None]
    assert torch.allclose(bank.mem_feats_ins_avg, ins, atol=1e-5)
    assert torch.allclose(bank.mem_feats_avg, cls, atol=1e-5)
    assert torch.allclose(bank.prototypes(), F.normalize(ins.mean(1), dim=-1), atol=1e-5)
    assert bank.mem_fg_feats.shape[0] == 0  # raw patches dropped after postprocess
    # inter-shot similarity: shot k's foreground mean vs the other shot's
    a0 = f[0, 0][m[0, 0] > 0].mean(0)
    a1 = f[0, 1][m[0, 1] > 0].mean(0)
    expect = (1 + F.cosine_similarity(a0, a1, dim=0)).item() / 2
    assert bank.mem_ins_sim_avg[0].item() == pytest.approx(expect, abs=1e-5)


def test_postprocess_pca_equals_sklearn_and_is_idempotent():
    bank, feats, masks = _filled_bank(p=20, d=5)
    fg0 = feats.view(2, 2, 20, 5)[0][masks.view(2, 2, 20)[0] > 0].double().numpy()
    bank.postprocess()
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    ref = PCA(n_components=2).fit(fg0)
    assert np.allclose(bank.mem_pca_mean[0].numpy(), ref.mean_, atol=1e-5)
    assert np.allclose(bank.mem_pca_components[0].numpy(), ref.components_, atol=1e-4)
    bank.postprocess()  # a second run changes nothing (the reference doubled the instance means)
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())


def test_k_equals_one_gives_no_nan():
    bank, _, _ = _filled_bank(k=1)
    bank.postprocess()
    for name, t in bank.state_dict().items():
        if t.is_floating_point():
            assert not torch.isnan(t).any(), name
    assert torch.all(bank.mem_ins_sim_avg == 1.0)


def test_kmeans_empty_cluster_keeps_centre_and_is_deterministic():
    x = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    a = cosine_kmeans(x, 4, generator=torch.Generator().manual_seed(0))
    b = cosine_kmeans(x, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.isnan(a).any()
    assert torch.allclose(a.norm(dim=1), torch.ones(4))
    assert {tuple(r) for r in a.round().tolist()} == {(1.0, 0.0), (0.0, 1.0)}


def test_state_dict_round_trip_adopts_packed_length():
    bank, _, _ = _filled_bank()
    fresh = MemoryBank(2, 2, 4, kmeans_k=2, n_pca_components=2)
    fresh.load_state_dict(bank.state_dict(), strict=True)
    assert torch.equal(fresh.mem_fg_feats, bank.mem_fg_feats)
    fresh.postprocess()
    bank.postprocess()
    assert torch.allclose(fresh.prototypes(), bank.prototypes())


def test_memory_sizes_script_reports_small_files(capsys):
    import importlib.util

    from ..conftest import REPO

    spec = importlib.util.spec_from_file_location("memory_sizes", REPO / "scripts" / "memory_sizes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sizes = mod.main(["--classes", "2", "--shots", "2", "--encoder", "dinov2_small"])
    assert 0 < sizes["postprocessed_bytes"] < sizes["fill_bytes"]
    assert "foreground patches stored" in capsys.readouterr().out
