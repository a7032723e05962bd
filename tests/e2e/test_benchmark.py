"""scripts/benchmark.py: consistent figures on a tiny setting, and FLOP counts that match a counter."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from no_time_to_train.checkpoints.loading import build_sam2
from no_time_to_train.models.sam2_fast_decoder import MultiPromptDecoder
from no_time_to_train.models.sam2_proposer import Sam2PointGridProposer, _hypernetwork

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("ntt_benchmark", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark():
    return _load_benchmark()


def test_tiny_run_figures_are_consistent(benchmark, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = benchmark.main(
        ["--points-per-side", "2", "--images", "1", "--compare", "--warmup", "0", "--json", str(out)]
    )
    printed = capsys.readouterr().out
    ours, slow = result["ours"], result["straightforward"]
    for summary in (ours, slow):
        sec = summary["seconds_per_image"]
        assert set(sec) == {*benchmark.STAGES, "other"}
        assert all(v >= 0 for v in sec.values())
        assert all(sec[s] > 0 for s in ("sam2_encoder", "decoder_transformer", "dinov2", "pooling"))
        assert math.isclose(sum(summary["share"].values()), 1.0, abs_tol=1e-9)
        assert math.isclose(sum(sec.values()), summary["total_per_image"], rel_tol=1e-9)
        floor = sum(sec[s] for s in benchmark.FLOOR)
        assert math.isclose(summary["floor_per_image"], floor, rel_tol=1e-9)
        assert math.isclose(
            summary["outside_floor_share"], 1 - floor / summary["total_per_image"], rel_tol=1e-9
        )
        assert summary["prompts_per_image"] == 4 and 0 <= summary["kept_per_image"] <= 4
        assert summary["peak_rss_mb"] > 100
    assert ours["seconds_per_image"]["upscaling"] > 0 or ours["kept_per_image"] == 0
    assert ours["decoder_gflop_per_image"] > 0 and ours["decoder_gflops_per_second"] > 0
    cmp = slow["compare"]
    # Same numbers up to float rounding; a full-resolution pixel whose logit is within rounding of 0
    # may flip (random weights give small logits), hence "within float noise" rather than bit-identical.
    assert cmp["same_kept_prompts"] and cmp["equal_within_float_noise"]
    assert cmp["identical_detections"] == (
        cmp["differing_mask_pixels"] == 0 and cmp["max_abs_diff"]["boxes"] == 0
    )
    diff = cmp["max_abs_diff"]
    assert (
        diff["logits"] < 1e-4 and diff["iou"] < 1e-5 and diff["scores"] < 1e-5 and diff["embeddings"] < 1e-5
    )
    assert math.isclose(result["speed_up"], slow["total_per_image"] / ours["total_per_image"])
    # The printed report and the json carry the same figures.
    assert "Per-image time, this implementation" in printed and "equal within float noise: True" in printed
    assert f"{ours['total_per_image']:.3f}" in printed
    saved = json.loads(out.read_text())
    assert saved["ours"]["total_per_image"] == pytest.approx(ours["total_per_image"])
    assert saved["straightforward"]["compare"]["equal_within_float_noise"] is True


def test_decoder_flops_match_a_flop_counter(benchmark):
    """The analytical counts equal torch's FlopCounterMode on one prompt, for the official
    decoder and for ours (per image, per prompt, per kept prompt)."""
    torch.manual_seed(0)
    sam2 = build_sam2("sam2_hiera_t.yaml", None, device="cpu")
    dec = sam2.sam_mask_decoder
    macs = benchmark.decoder_macs(dec, 64 * 64)
    prop = Sam2PointGridProposer(sam2)
    embed = torch.randn(1, 256, 64, 64)
    high_res = [torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128)]
    with torch.no_grad():
        sparse, dense = prop._prompt_embeddings(torch.tensor([[300.5, 200.5]]))
        pe = sam2.sam_prompt_encoder.get_dense_pe()

        def counted(fn) -> float:
            # Attention through SDPA's math kernel, which reaches the counter as plain batched
            # matrix products: whether a release's counter has a formula for the fused CPU
            # attention kernels (2.15 has, 2.14 has not) then does not change the count.
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                out = fn()
            return counter.get_total_flops() / 2, out

        official, _ = counted(
            lambda: dec(
                embed, pe, sparse, dense, multimask_output=True, repeat_image=True, high_res_features=high_res
            )
        )
        ours = MultiPromptDecoder(dec)
        per_image, ctx = counted(lambda: ours.prepare(embed, pe, dense, high_res))
        tokens = ours.tokens(sparse)
        per_prompt, (queries, keys) = counted(lambda: ours.two_way_blocks(ctx, tokens))
        iou_row = torch.tensor([[ours.iou_row()]])
        flops, iou_token = counted(lambda: ours.final_attention(ctx, queries, tokens, keys, iou_row)[:, 0])
        per_prompt += flops + counted(lambda: ours.predict_iou(iou_token))[0]
        mask_row = torch.tensor([[ours.iou_row() + 3]])
        per_kept, mask_token = counted(
            lambda: ours.final_attention(ctx, queries, tokens, keys, mask_row)[:, 0]
        )
        per_kept += counted(lambda: _hypernetwork(dec, mask_token, torch.tensor([2])))[0]
        hyper = _hypernetwork(dec, mask_token, torch.tensor([2]))
        per_kept += counted(lambda: ours.mask_logits(ctx, keys, hyper))[0]
    assert macs["official_per_prompt"] == pytest.approx(official, rel=1e-3)
    assert macs["ours_per_image"] == pytest.approx(per_image, rel=1e-3)
    assert macs["ours_transformer_per_prompt"] == pytest.approx(per_prompt, rel=1e-3)
    assert macs["ours_upscaling_per_kept"] == pytest.approx(per_kept, rel=1e-3)
    # About 3.6 GFLOP per prompt for the official decoder; ours does half of it.
    assert 3.5e9 < 2 * official < 3.8e9
    assert macs["ours_transformer_per_prompt"] + macs["ours_upscaling_per_kept"] < 0.55 * official


def test_per_encoder_table(benchmark, capsys):
    result = benchmark.main(["--encoders", "dinov3_small", "clip_b32", "--points-per-side", "2", "--images", "1",
                             "--warmup", "0"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "PER-IMAGE TIME BY ENCODER" in printed
    for name, grid in (("dinov3_small", 37), ("clip_b32", 7)):
        row = next(line for line in printed.splitlines() if line.startswith(name))
        enc_s, total_s = (float(v) for v in row.split()[-2:])
        assert f" {grid} " in row and 0 < enc_s < total_s
        assert result["encoders"][name]["ours"]["seconds_per_image"]["dinov2"] == pytest.approx(
            enc_s, abs=1e-3
        )
