"""SAM2 point-grid proposals: the reordered decoder equals the official decoder's outputs."""

from __future__ import annotations

import pytest
import torch

from no_time_to_train.models.encoders import build_sam2
from no_time_to_train.models.proposals import Sam2PointGridProposer


@pytest.fixture(scope="module")
def sam2_tiny():
    torch.manual_seed(0)
    return build_sam2("sam2_hiera_t.yaml", None, device="cpu")


@pytest.fixture(scope="module")
def image_features(sam2_tiny):
    torch.manual_seed(1)
    image = torch.rand(1, 3, 1024, 1024)
    prop = Sam2PointGridProposer(sam2_tiny)
    with torch.no_grad():
        return prop.image_features(image)


@pytest.mark.parametrize("quantile", [0.0, 0.5])
def test_fast_decoder_matches_official(sam2_tiny, image_features, quantile):
    embed, high_res = image_features
    pts = torch.rand(12, 2) * 1024
    official = Sam2PointGridProposer(sam2_tiny, iou_thr=-1.0, fast=False)
    with torch.no_grad():
        ref_logits, ref_iou, _ = official._decode(embed, high_res, pts)
    thr = float(ref_iou.quantile(quantile)) - 1e-6 if quantile else -1.0
    fast = Sam2PointGridProposer(sam2_tiny, iou_thr=thr, fast=True, upscale_batch_size=5)
    official.iou_thr = thr
    with torch.no_grad():
        ref_logits, ref_iou, ref_kept = official._decode(embed, high_res, pts)
        logits, iou, kept = fast._decode(embed, high_res, pts)
    assert torch.equal(kept, ref_kept) and kept.sum() >= (6 if quantile else 12)
    assert torch.allclose(iou, ref_iou, atol=1e-5)
    assert torch.allclose(logits, ref_logits, atol=1e-3, rtol=1e-4)
    assert logits.shape[1:] == (256, 256)


def test_best_of_multimask_outputs_1_to_3(sam2_tiny, image_features):
    """The kept IoU is the max over multimask tokens 1..3 of the decoder (token 0 is ignored)."""
    embed, high_res = image_features
    prop = Sam2PointGridProposer(sam2_tiny, iou_thr=-1.0)
    pts = torch.tensor([[100.5, 200.5], [800.5, 300.5]])
    sparse, dense = prop._prompt_embeddings(pts)
    dec = sam2_tiny.sam_mask_decoder
    with torch.no_grad():
        _, all_iou, _, _ = dec.predict_masks(
            embed, sam2_tiny.sam_prompt_encoder.get_dense_pe(), sparse, dense, repeat_image=True,
            high_res_features=high_res,
        )  # fmt: skip
        _, iou, _ = prop._decode(embed, high_res, pts)
    assert torch.allclose(iou, all_iou[:, 1:].max(dim=1).values, atol=1e-6)
