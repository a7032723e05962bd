"""Formula tests for each step of the test-time scoring (method-spec §4.4), with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from no_time_to_train.config import InferenceCfg
from no_time_to_train.models import matching
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.models.proposals import Proposals
from no_time_to_train.models.sam2_proposer import point_grid
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter
from no_time_to_train.testing import straightforward_score_proposals


def test_point_grid_matches_reference_coordinates_and_order():
    g = point_grid(32, 1024)
    assert g.shape == (1024, 2)
    ticks = torch.linspace(0, 1023, 32) + 0.5
    # The reference's meshgrid(x, y, indexing="ij") order: x varies slowest, y fastest.
    assert torch.all(g[:32, 0] == 0.5) and torch.allclose(g[:32, 1], ticks)
    assert torch.allclose(g[::32, 0], ticks) and g[-1].tolist() == [1023.5, 1023.5]


def test_equal_sam_iou_tie_keeps_the_prompt_first_in_reference_order():
    """Four prompts of a 2x2 grid, each proposing the image minus a notch at its point. The two
    off-diagonal prompts have exactly equal predicted IoU; NMS keeps the first, so the survivor is
    decided by the grid order: the reference's is (x=0.5, y=255.5) before (x=255.5, y=0.5)."""
    size = 256
    pts = point_grid(2, size)
    logits = torch.ones(4, size, size)
    for i, (x, y) in enumerate(pts.long().tolist()):
        logits[i, max(0, y - 20) : y + 20, max(0, x - 20) : x + 20] = -1.0  # notch around the prompt
    iou = torch.tensor([0.3, 0.9, 0.9, 0.3])
    feats = torch.zeros(37, 37, 2)
    feats[..., 0] = 1.0  # every mask pools to the one prototype: score 1
    seg = ReferenceSegmenter(_bank_with_prototypes(torch.tensor([[1.0, 0.0]])))
    det = seg.score_proposals(Proposals(logits, iou, pts), feats, (size, size))
    first = int((pts == torch.tensor([0.5, size - 0.5])).all(dim=1).nonzero()[0])
    assert first == 1 and len(det) == 1  # NMS removed the three others (box IoU 1)
    assert torch.equal(det.masks[0], logits[first] > 0)


def test_all_zero_similarity_row_is_labelled_as_the_reference_topk():
    """A proposal whose cosines are all negative (clamped to 0) still takes part in the class-aware
    NMS before zero scores are dropped; its label, taken with topk as in the reference, decides
    which class's overlapping proposal it suppresses."""
    c, d = 4, 5
    protos = torch.eye(c, d)
    neg = F.normalize(-protos.sum(0, keepdim=True), dim=1)  # negative cosine with every prototype
    sims = (neg @ protos.T).clamp(min=0)
    assert torch.all(sims == 0)
    tie_label = int(torch.topk(sims, 1, dim=1).indices[0, 0])
    other = (tie_label + 1) % c
    assert int(matching.label_and_score(neg, protos)[1][0]) == tie_label
    # With C = 4, this torch's topk picks another class than max/argmax on the all-zero row,
    # so a max-based label would suppress the wrong proposal below.
    emb = torch.cat([neg, protos[tie_label : tie_label + 1], protos[other : other + 1]])
    logits = torch.full((3, 64, 64), -1.0)
    logits[:, 10:50, 10:50] = 1.0  # three proposals with the same box
    iou = torch.tensor([0.9, 0.5, 0.5])  # the zero-score proposal ranks first in NMS
    seg = ReferenceSegmenter(_bank_with_prototypes(protos))
    orig = matching.pool_mask_features
    try:
        matching.pool_mask_features = lambda masks, feats, mode="separable": emb
        det = seg.score_proposals(Proposals(logits, iou, torch.zeros(3, 2)), torch.zeros(37, 37, d), (64, 64))
    finally:
        matching.pool_mask_features = orig
    assert det.labels.tolist() == [other]  # the tie-labelled proposal suppressed its class's twin


def test_masks_to_boxes_inclusive_and_empty():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 2, 3] = True  # one pixel
    m[1, 1:4, 2:7] = True
    boxes = matching.masks_to_boxes(m)
    assert boxes.tolist() == [[3, 2, 3, 2], [2, 1, 6, 3], [0, 0, 0, 0]]


@pytest.mark.parametrize("n_in,n_out", [(37, 256), (16, 64), (5, 7)])
def test_interp_matrix_equals_bilinear_antialias(n_in, n_out):
    x = torch.rand(1, 1, n_in, n_in, dtype=torch.float64)
    a = matching.interp_matrix(n_in, n_out, x.device, torch.float64)
    ref = F.interpolate(x, size=(n_out, n_out), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    assert torch.allclose(a @ x[0, 0] @ a.T, ref, atol=1e-10)


def test_separable_pooling_equals_dense_product():
    torch.manual_seed(0)
    feats = torch.randn(37, 37, 16)
    masks = torch.rand(40, 256, 256) > 0.6
    masks[3] = False
    masks[4, 10:20, 100:140] = True
    dense = matching.pool_mask_features(masks, feats, mode="dense", chunk=7)
    sep = matching.pool_mask_features(masks, feats, mode="separable", chunk=9)
    assert torch.isnan(dense[3]).all() and torch.isnan(sep[3]).all()  # empty mask -> NaN, as the reference
    ok = ~torch.isnan(dense[:, 0])
    assert torch.allclose(dense[ok], sep[ok], atol=1e-5)
    # Known answer: a constant feature map pools to that constant, normalised.
    const = torch.ones(37, 37, 4) * torch.tensor([3.0, 0.0, 4.0, 0.0])
    out = matching.pool_mask_features(masks[:2], const)
    assert torch.allclose(out, torch.tensor([[0.6, 0.0, 0.8, 0.0]]).expand(2, 4), atol=1e-6)


def test_prototype_is_normalised_mean_of_instance_means():
    ins = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]])  # (C=2, K=2, D=2)
    counts = torch.tensor([2, 1])  # class 1 has only slot 0 filled
    protos = matching.class_prototypes(ins, counts)
    s = 1 / math.sqrt(2)
    assert torch.allclose(protos, torch.tensor([[s, s], [1.0, 0.0]]))


def test_scores_are_clamped_cosine_and_labels_argmax():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = F.normalize(torch.tensor([[1.0, 1.0], [-1.0, 0.2], [-1.0, -1.0], [float("nan"), 0.0]]), dim=1)
    scores, labels = matching.label_and_score(emb, protos)
    assert scores[0].item() == pytest.approx(1 / math.sqrt(2))
    assert labels[1].item() == 1 and scores[1].item() == pytest.approx(0.2 / math.sqrt(1.04))
    assert scores[2].item() == 0.0  # all similarities negative -> clamped to 0 (then dropped)
    assert math.isnan(scores[3].item())


def test_nms_is_ranked_by_sam_iou_not_semantic_score():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=torch.float)
    sam_iou = torch.tensor([0.5, 0.9, 0.7])
    labels = torch.tensor([0, 0, 1])  # box 2 overlaps box 0 but is another class
    keep = matching.class_aware_nms(boxes, sam_iou, labels, 0.5, max_keep=10)
    assert keep.tolist() == [1, 2]
    assert matching.class_aware_nms(boxes, sam_iou, labels, 0.5, max_keep=1).tolist() == [1]


def test_semantic_soft_merge_known_answer():
    m = torch.zeros(4, 10, 10, dtype=torch.bool)
    m[0, :, :5] = True  # 50 px, ranked first
    m[1, :, 3:8] = True  # 50 px, 20 px inside mask 0 -> IoS 0.4
    m[2, :, 3:8] = True  # same pixels but another class: untouched
    m[3, 0, 0] = True  # 1 px inside mask 0 -> IoS 1, orthogonal embedding -> weight 0
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    out = matching.semantic_soft_merge(m, scores, labels, emb)
    # mask 1: IoS 0.4 * sim 0.6 = 0.24 against mask 0; mask 3: max(1*0, 0 (not in mask 1)) = 0
    assert out[0].item() == pytest.approx(0.9)
    assert out[1].item() == pytest.approx(0.8 * math.sqrt(1 - 0.24))
    assert out[2].item() == pytest.approx(0.7)
    assert out[3].item() == pytest.approx(0.6)


def test_upsample_logits_threshold_at_zero():
    logits = torch.full((1, 4, 4), -1.0)
    logits[0, :2, :2] = 1.0
    m = matching.upsample_logits_to_masks(logits, (8, 8), chunk=1)
    assert m.shape == (1, 8, 8) and m[0, :4, :4].all() and not m[0, 4:, :].any() and not m[0, :, 4:].any()


def _bank_with_prototypes(protos: torch.Tensor) -> MemoryBank:
    c, d = protos.shape
    bank = MemoryBank(c, 1, d)
    bank.mem_feats_ins_avg[:, 0] = protos
    bank.mem_fill_counts.fill_(1)
    bank.mem_postprocessed.fill_(True)
    return bank


def test_score_proposals_end_to_end_known_answer():
    """Two objects of two classes, a duplicate, a background blob, an empty mask; top-k = 2."""
    d = 3
    feats = torch.zeros(37, 37, d)
    feats[:, :18, 0] = 1.0  # left half: class 0 features
    feats[:, 19:, 1] = 1.0  # right half: class 1 features
    feats[:, 18, 2] = 1.0  # a column of background
    logits = torch.full((5, 256, 256), -5.0)
    logits[0, :, :100] = 5  # class 0 object
    logits[1, :, :90] = 5  # duplicate of 0 with lower SAM IoU: suppressed by NMS
    logits[2, :, 160:] = 5  # class 1 object
    logits[3, :, 126:130] = 5  # background column: near-zero similarity
    iou = torch.tensor([0.9, 0.8, 0.85, 0.95, 0.99])  # mask 4 is empty
    seg = ReferenceSegmenter(
        _bank_with_prototypes(torch.eye(d)[:2]), infer_cfg=InferenceCfg(num_out_instance=2, nms_thr=0.5)
    )
    det = seg.score_proposals(Proposals(logits, iou, torch.zeros(5, 2)), feats, (64, 128))
    assert len(det) == 2
    assert det.labels.tolist() == [0, 1] or det.labels.tolist() == [1, 0]
    assert torch.all(det.scores > 0.99)
    assert det.masks.shape == (2, 64, 128)
    left = det.masks[det.labels == 0][0]
    assert left[:, :49].all() and not left[:, 51:].any()  # 100/256 of 128 px = 50 px
    assert det.boxes[det.labels == 0][0].tolist() == [0, 0, left.any(0).nonzero().max().item(), 63]


def test_score_proposals_no_survivor_gives_empty_output():
    seg = ReferenceSegmenter(_bank_with_prototypes(torch.eye(2)))
    logits = torch.full((2, 256, 256), -5.0)
    logits[0, :10, :10] = 5
    feats = torch.zeros(37, 37, 2)
    feats[..., 1] = -1.0  # negative cosine everywhere -> score 0 -> dropped
    det = seg.score_proposals(Proposals(logits, torch.ones(2), torch.zeros(2, 2)), feats, (20, 30))
    assert len(det) == 0 and det.masks.shape == (0, 20, 30)


def test_top_k_keeps_highest_scores():
    d = 4
    feats = torch.zeros(37, 37, d)
    for i in range(4):
        feats[:, i * 9 : i * 9 + 9, 0] = 1.0
        feats[:, i * 9 : i * 9 + 9, 1] = float(i)  # further right -> less similar to class 0
    logits = torch.full((4, 256, 256), -5.0)
    for i in range(4):
        logits[i, :, i * 62 + 2 : i * 62 + 58] = 5
    seg = ReferenceSegmenter(
        _bank_with_prototypes(torch.eye(d)[:1]), infer_cfg=InferenceCfg(num_out_instance=2)
    )
    det = seg.score_proposals(Proposals(logits, torch.full((4,), 0.9), torch.zeros(4, 2)), feats, (256, 256))
    assert len(det) == 2 and det.scores[0] >= det.scores[1]
    assert det.boxes[:, 0].tolist() == [2.0, 64.0]  # the two leftmost (most class-0-like) masks


# --------------------------------------------------------------------------- full-resolution masks


def _blobs(n: int, size: tuple[int, int], seed: int, bias: float = -0.3) -> torch.Tensor:
    """``(n, H, W)`` logits of smooth random blobs (upsampled low-frequency noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, 6, 6, generator=g)
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)[:, 0] + bias


def test_cropped_masks_round_trip_boxes_and_areas():
    masks = _blobs(12, (37, 53), seed=0) > 0  # width not a multiple of 8
    masks[3] = False  # empty
    masks[4] = False
    masks[4, 36, 52] = True  # single pixel in the last corner
    masks[5] = True  # full
    cm = matching.CroppedMasks.from_masks(masks)
    assert torch.equal(cm.dense(), masks)
    assert torch.equal(cm.boxes.float(), matching.masks_to_boxes(masks))
    assert cm.areas.tolist() == masks.flatten(1).sum(1).tolist()
    sub = cm.select(torch.tensor([5, 0, 4]))
    assert torch.equal(sub.dense(), masks[[5, 0, 4]])
    assert torch.equal(cm.select(cm.areas > 0).dense(), masks[masks.flatten(1).any(1)])
    # An arbitrary window (offsets not aligned to the 8-pixel packing).
    win = cm.window(torch.arange(12), (3, 5, 50, 30))
    assert torch.equal(win.bool(), masks[:, 5:30, 3:50])
    # Storage is the masks' own boxes, 8 pixels per byte.
    assert sum(b.numel() for b in cm.bits) < masks.numel() / 4


def test_cropped_masks_from_logits_equals_dense_upsampling():
    logits = _blobs(9, (256, 256), seed=1)
    for size in [(61, 203), (300, 97)]:
        dense = matching.upsample_logits_to_masks(logits, size, chunk=4)
        cm = matching.CroppedMasks.from_logits(logits, size, chunk=4)
        assert torch.equal(cm.dense(), dense) and cm.size == size
    empty = matching.CroppedMasks.from_logits(logits[:0], (10, 20))
    assert len(empty) == 0 and empty.dense().shape == (0, 10, 20)


@pytest.mark.parametrize("max_floats,block", [(10**9, 128), (3000, 128), (10**9, 3), (5000, 4)])
def test_cropped_masks_intersections_exact_lower_triangle(max_floats, block):
    torch.manual_seed(2)
    masks = _blobs(23, (45, 70), seed=2, bias=-0.8) > 0  # sparse, partly disjoint blobs
    masks[7] = False
    masks[10, :, :] = False
    masks[10, 40:, 60:] = True  # small, far from most others
    brute = (masks[:, None] & masks[None]).flatten(2).sum(-1).double()
    cm = matching.CroppedMasks.from_masks(masks)
    idx = torch.tensor([0, 3, 7, 10, 1, 2, 22, 15, 4, 5, 6, 8, 9])
    got = cm.intersections(idx, max_floats=max_floats, block=block)
    assert torch.equal(got, torch.tril(brute[idx][:, idx], diagonal=-1))


@pytest.mark.parametrize("ori_size", [(123, 157), (480, 640)])
def test_score_proposals_equals_straightforward_pipeline(ori_size):
    """Many overlapping proposals of three classes; the bounded pipeline gives identical output."""
    torch.manual_seed(3)
    d, n = 8, 90
    feats = F.interpolate(torch.randn(1, d, 5, 5), size=(37, 37), mode="bilinear")[0].permute(1, 2, 0)
    logits = _blobs(n, (256, 256), seed=3, bias=-0.8)
    logits[7] = -1.0  # empty proposal
    iou = torch.rand(n)
    protos = F.normalize(torch.randn(3, d), dim=1)
    seg = ReferenceSegmenter(
        _bank_with_prototypes(protos), infer_cfg=InferenceCfg(num_out_instance=25, nms_thr=0.9)
    )
    seg.compute.merge_chunk = 1  # strips of about one mask: many strips
    det = seg.score_proposals(Proposals(logits, iou, torch.zeros(n, 2)), feats, ori_size)
    ref, n_merged = straightforward_score_proposals(
        seg, Proposals(logits, iou, None), feats, ori_size, pooling=seg.compute.pooling
    )
    masks, boxes, scores, labels, emb = ref.masks, ref.boxes, ref.scores, ref.labels, ref.embeddings
    assert len(det) == 25 and n_merged > 30 and labels.unique().numel() >= 2
    assert torch.equal(det.labels, labels) and torch.equal(det.masks, masks) and torch.equal(det.boxes, boxes)
    assert torch.equal(det.scores, scores) and torch.equal(det.embeddings, emb)
    decayed = det.scores < matching.label_and_score(det.embeddings, protos)[0] - 1e-6
    assert decayed.any()  # the merge did something
