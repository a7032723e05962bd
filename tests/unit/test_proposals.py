"""SAM2 point-grid proposals: our decoder forward equals the official decoder's outputs."""

from __future__ import annotations

import pytest
import torch
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.transformer import TwoWayTransformer

from no_time_to_train.checkpoints.loading import build_sam2
from no_time_to_train.models.sam2_fast_decoder import MultiPromptDecoder, supports
from no_time_to_train.models.sam2_proposer import Sam2PointGridProposer


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
    fast = Sam2PointGridProposer(sam2_tiny, iou_thr=thr, fast=True, decoder_chunk=5)
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


def test_fast_transformer_matches_official_transformer(sam2_tiny, image_features):
    """Our two-way transformer forward (prompt-independent work once, projections folded into the
    tokens) equals the official one run on B copies of the image."""
    embed, high_res = image_features
    prop = Sam2PointGridProposer(sam2_tiny)
    dec = sam2_tiny.sam_mask_decoder
    pts = torch.rand(6, 2) * 1024
    with torch.no_grad():
        sparse, dense = prop._prompt_embeddings(pts)
        pe = sam2_tiny.sam_prompt_encoder.get_dense_pe()
        ours = MultiPromptDecoder(dec)
        ctx = ours.prepare(embed, pe, dense, high_res)
        tokens = ours.tokens(sparse)
        queries, keys = ours.transformer(ctx, tokens)
        ref_q, ref_k = dec.transformer(
            (embed + dense).expand(6, -1, -1, -1), pe.expand(6, -1, -1, -1), tokens
        )
    assert queries.shape == ref_q.shape and keys.shape == ref_k.shape == (6, 64 * 64, 256)
    assert torch.allclose(queries, ref_q, atol=2e-5, rtol=1e-5)
    assert torch.allclose(keys, ref_k, atol=2e-5, rtol=1e-5)


def _small_decoder(depth: int, high_res: bool, obj_scores: bool, sigmoid: bool) -> MaskDecoder:
    torch.manual_seed(depth + 2 * high_res + 4 * obj_scores)
    transformer = TwoWayTransformer(depth=depth, embedding_dim=32, num_heads=4, mlp_dim=64)
    dec = MaskDecoder(
        transformer_dim=32,
        transformer=transformer,
        use_high_res_features=high_res,
        iou_prediction_use_sigmoid=sigmoid,
        pred_obj_scores=obj_scores,
    )
    for p in dec.parameters():  # non-trivial norms and biases
        p.data.add_(torch.randn_like(p) * 0.1)
    return dec.eval()


@pytest.mark.parametrize(
    "depth,high_res,obj_scores,sigmoid",
    [(2, True, True, True), (1, False, False, False), (3, True, False, True)],
)
def test_fast_decoder_matches_official_on_other_layouts(depth, high_res, obj_scores, sigmoid):
    """Every mask token, IoU and image token of ``MaskDecoder.predict_masks`` is reproduced for
    other depths, without high-resolution features and without the object-score token."""
    dec = _small_decoder(depth, high_res, obj_scores, sigmoid)
    h = w = 8
    embed, pe, dense = torch.randn(1, 32, h, w), torch.randn(1, 32, h, w), torch.randn(1, 32, 1, 1)
    feats = [torch.randn(1, 4, 4 * h, 4 * w), torch.randn(1, 8, 2 * h, 2 * w)] if high_res else None
    sparse = torch.randn(5, 2, 32)
    with torch.no_grad():
        ref_masks, ref_iou, _, _ = dec.predict_masks(
            embed, pe, sparse, dense, repeat_image=True, high_res_features=feats
        )
        ours = MultiPromptDecoder(dec)
        ctx = ours.prepare(embed, pe, dense, feats)
        tokens = ours.tokens(sparse)
        queries, keys = ours.transformer(ctx, tokens)
        s = ours.iou_row()
        iou = ours.predict_iou(queries[:, s])
        for t in range(dec.num_mask_tokens):
            hyper = dec.output_hypernetworks_mlps[t](queries[:, s + 1 + t])
            assert torch.allclose(ours.mask_logits(ctx, keys, hyper), ref_masks[:, t], atol=2e-5, rtol=1e-5)
        # The final attention of chosen tokens only (one row per prompt, a different one each).
        blocks_q, blocks_k = ours.two_way_blocks(ctx, tokens)
        rows = torch.tensor([[0], [3], [s], [tokens.shape[1] - 1], [s + 2]])
        chosen = ours.final_attention(ctx, blocks_q, tokens, blocks_k, rows)
        assert torch.allclose(chosen[:, 0], queries[torch.arange(5), rows[:, 0]], atol=1e-6)
    assert torch.equal(blocks_k, keys)
    assert torch.allclose(iou, ref_iou, atol=1e-6)


def test_forward_fast_equals_official_whole_grid(sam2_tiny):
    """The whole proposer (point grid, prompt batches that do not divide it, decoder chunks)."""
    torch.manual_seed(4)
    image = torch.rand(1, 3, 1024, 1024)
    kw = dict(points_per_side=4, point_batch_size=6, iou_thr=-1.0)
    with torch.no_grad():
        ref = Sam2PointGridProposer(sam2_tiny, fast=False, **kw)(image)
        thr = float(ref.iou.median())
        ref = Sam2PointGridProposer(sam2_tiny, fast=False, **{**kw, "iou_thr": thr})(image)
        fast = Sam2PointGridProposer(sam2_tiny, fast=True, decoder_chunk=3, **{**kw, "iou_thr": thr})(image)
    assert 0 < len(ref) < 16 and len(fast) == len(ref)
    assert torch.equal(fast.points, ref.points)
    assert torch.allclose(fast.iou, ref.iou, atol=1e-6)
    assert torch.allclose(fast.logits, ref.logits, atol=1e-4, rtol=1e-4)


def test_unknown_decoder_layout_falls_back_to_official(sam2_tiny):
    assert supports(sam2_tiny.sam_mask_decoder)
    dec = _small_decoder(2, True, True, True)
    dec.transformer.layers[1].skip_first_layer_pe = True  # not the official layout
    assert not supports(dec)
    with pytest.raises(TypeError):
        MultiPromptDecoder(dec)
