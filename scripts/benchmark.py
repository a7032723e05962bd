"""Per-image cost of the test step, stage by stage, on real-size networks with random weights.

Usage (from the repository root)::

    python scripts/benchmark.py --compare                      # SAM2-t + DINOv2-S, 1024 prompts
    python scripts/benchmark.py --sam2 l --encoder dinov2_large --images 1
    python scripts/benchmark.py --iou-thr 0.51 --json bench.json   # emulate a lower keep rate

Generates ~1024-px synthetic images (``dataset.synthetic``), builds SAM2 and DINOv2 from their
configs with random weights, and runs the test-time pipeline of ``ReferenceSegmenter`` on each
image with the reference's inference settings, timing every stage: SAM2 image encoder, decoder
transformer, IoU filter, mask upscaling, DINOv2, pooling, NMS, full-resolution masks, soft merge
and COCO result encoding. The "floor" is the time inside network forward passes (SAM2 encoder,
decoder transformer, upscaling of the kept prompts, DINOv2); everything else is overhead.

``--compare`` also runs the straightforward implementation on the same images -- the official
``MaskDecoder.forward`` (every prompt on its own copy of the image tokens), the dense
``[N x 65536] @ [65536 x D]`` pooling, and all kept masks as float at full resolution with a full
``M @ M^T`` product per class for the merge -- and prints the speed-up and the largest differences.

``--encoders NAME ...`` (or ``--encoders families``: the smallest member of each family) repeats
the run once per feature encoder -- DINOv2, DINOv3, CLIP, Perception Encoder, at the reference's
input size -- and prints their per-image times side by side; the ``dinov2`` stage is the feature
encoder's forward pass, whatever its family.

The class prototypes are taken from the ground-truth objects of the benchmark images themselves (an
oracle memory bank), so that scoring, NMS and merge have work to do. With random weights SAM2
predicts an IoU of about 0.5 for every prompt, so nearly every prompt passes ``iou_thr`` 0.4;
``--iou-thr`` emulates other keep rates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import record_function  # noqa: E402

from no_time_to_train.config import ComputeCfg, InferenceCfg  # noqa: E402
from no_time_to_train.models import matching  # noqa: E402
from no_time_to_train.models.memory_bank import MemoryBank  # noqa: E402
from no_time_to_train.models.sam2_proposer import Sam2PointGridProposer  # noqa: E402
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter  # noqa: E402
from no_time_to_train.runtime import adapt_cpu_threads, configure_cpu_threads, decoder_chunk  # noqa: E402
from no_time_to_train.testing import straightforward_score_proposals  # noqa: E402

STAGES = (
    "sam2_encoder", "decoder_transformer", "iou_filter", "upscaling", "dinov2",
    "pooling", "nms", "full_res", "merge", "encoding",
)  # fmt: skip
FLOOR = ("sam2_encoder", "decoder_transformer", "upscaling", "dinov2")
REFERENCE_SECONDS = (131.0, 144.0)  # the reference's test step per image, SAM2-t + DINOv2-S, 2 CPU cores
CLASSES = ("person", "car", "dog")


# --------------------------------------------------------------------------- timing


class StageTimes:
    """Seconds per stage, from the ``ntt::<stage>`` ``record_function`` labels that the pipeline's
    code carries: ``with StageTimes(device) as t: ...`` then ``t.seconds``.

    For the duration of the ``with``, the modules' ``record_function`` is replaced by a timer with
    the same labels (a profiler would add its own overhead and messages); on CUDA the timer
    synchronises before reading the clock, so asynchronous kernels are charged to their stage.
    """

    MODULES = ("no_time_to_train.models.sam2_proposer", "no_time_to_train.pipeline.segmenter",
               "no_time_to_train.testing")  # fmt: skip

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._saved: list = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def _label(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name.removeprefix("ntt::")] += time.perf_counter() - start

    def __enter__(self) -> StageTimes:
        # The pipeline's modules, and this script (its straightforward path has labels too).
        spaces = [vars(sys.modules[name]) for name in self.MODULES] + [globals()]
        self._saved = [(space, space["record_function"]) for space in spaces]
        for space in spaces:
            space["record_function"] = self._label
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        for space, fn in self._saved:
            space["record_function"] = fn


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------- FLOPs


def _mlp_macs(mlp: nn.Module) -> int:
    return sum(layer.in_features * layer.out_features for layer in mlp.layers)


def decoder_macs(decoder: nn.Module, n_image_tokens: int, n_sparse: int = 2) -> dict[str, int]:
    """Multiply-accumulates of SAM2's mask decoder, counted from the module shapes.

    Only matrix products are counted (linear layers, attention products, the transposed
    convolutions as per-pixel products, the hypernetwork product); layer norms, softmax, GELU and
    additions are not. ``T`` tokens per prompt (obj-score, IoU, mask tokens, the point and its
    padding point), ``N`` image tokens, ``C`` channels, ``H`` heads, ``di`` attention width.

    Returns ``official_per_prompt`` (``MaskDecoder.forward`` per prompt: the whole transformer on
    its own copy of the image, upscaling and all mask tokens), ``ours_per_image`` (the first
    block's prompt-independent projections), ``ours_transformer_per_prompt`` (the blocks, the
    final attention of the IoU token, the IoU head), ``ours_upscaling_per_kept`` (final attention,
    hypernetwork and upscaling of the chosen mask token).
    """
    t = decoder.transformer
    c, n, heads, depth = decoder.transformer_dim, n_image_tokens, t.num_heads, len(t.layers)
    nmt = decoder.num_mask_tokens
    tok = (1 if decoder.pred_obj_scores else 0) + 1 + nmt + n_sparse
    di = t.layers[0].cross_attn_token_to_image.internal_dim
    mlp = 2 * tok * c * t.mlp_dim
    self_attn = 4 * tok * c * c + 2 * tok * tok * c
    dc1, _, _, dc2, _ = decoder.output_upscaling
    c4, c8 = dc1.out_channels, dc2.out_channels
    upscale = n * c * 4 * c4 + 4 * n * c4 * 4 * c8
    iou_head = _mlp_macs(decoder.iou_prediction_head)
    hyper = _mlp_macs(decoder.output_hypernetworks_mlps[0])

    t2i_official = tok * c * di + 2 * n * c * di + 2 * tok * n * di + tok * di * c
    i2t_official = n * c * di + 2 * tok * c * di + 2 * n * tok * di + n * di * c
    official = depth * (self_attn + t2i_official + mlp + i2t_official) + t2i_official
    official += iou_head + (c if decoder.pred_obj_scores else 0) + nmt * hyper + upscale + nmt * 16 * n * c8

    # Ours (models.sam2_fast_decoder): image-side projections folded into the H * rows token rows.
    def t2i(rows: int) -> int:  # q, folded keys, scores, A @ keys, values, out
        return 3 * rows * c * di + 2 * heads * rows * n * c + rows * di * c

    final = t2i(1) + heads * c * n  # one token; its positional-encoding term is a separate product

    t2i_first = tok * c * di + 2 * tok * n * di + tok * di * c
    i2t_first = 2 * tok * c * di + n * tok * di + tok * di * c + n * heads * tok * c
    i2t = 2 * tok * c * di + 2 * tok * di * c + 2 * heads * tok * c * n
    blocks = self_attn + t2i_first + mlp + i2t_first + (depth - 1) * (self_attn + t2i(tok) + mlp + i2t)
    return {
        "official_per_prompt": official,
        "ours_per_image": 3 * n * c * di,
        "ours_transformer_per_prompt": blocks + final + iou_head,
        "ours_upscaling_per_kept": final + hyper + upscale + 16 * n * c8,
    }


# --------------------------------------------------------------------------- models and data


def sam2_config_name(name: str) -> str:
    """``t``/``s``/``b+``/``l`` -> ``sam2_hiera_{x}.yaml``; full config names pass through."""
    return name if name.endswith(".yaml") else f"sam2_hiera_{name}.yaml"


class _Autocast(nn.Module):
    """Runs ``module`` under CUDA autocast and returns its tensors as float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        with torch.autocast("cuda", dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return _to_float(out)


def _to_float(x):  # noqa: ANN001, ANN202
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float(v) for v in x)
    return x


def build_networks(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Random-weight SAM2 (official modules from the config) and DINOv2 (timm) on ``device``."""
    from no_time_to_train.checkpoints.loading import build_sam2
    from no_time_to_train.encoders import build_encoder

    torch.manual_seed(args.seed)
    sam2 = build_sam2(sam2_config_name(args.sam2), None, device=device)
    # Any family, at the reference's input size, random weights.
    encoder = build_encoder(args.encoder, None).to(device).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    if dtype is not None:
        sam2.image_encoder = _Autocast(sam2.image_encoder, dtype)
        encoder = _Autocast(encoder, dtype)
    return sam2, encoder


def make_images(out_dir: Path, n: int, seed: int) -> list[dict]:
    """``n`` generated val images of ~1024 px with their ground-truth masks per class index."""
    import pycocotools.mask as mask_utils
    from pycocotools.coco import COCO

    from no_time_to_train.data.synthetic import LARGE_SIZE, generate_coco_dataset

    info = generate_coco_dataset(
        out_dir, n_train=2, n_val=n, class_names=CLASSES, n_shot=1, seed=seed,
        min_size=LARGE_SIZE[0], max_size=LARGE_SIZE[1], empty_fraction=0.0,
    )  # fmt: skip
    with contextlib.redirect_stdout(None):
        coco = COCO(info["val_json"])
    cat_index = {cid: i for i, cid in enumerate(info["category_ids"])}
    images = []
    for img_id in sorted(coco.getImgIds()):
        meta = coco.loadImgs(img_id)[0]
        with warnings.catch_warnings():  # pycocotools vs numpy 2 deprecation noise
            warnings.simplefilter("ignore", DeprecationWarning)
            gt = [
                (cat_index[a["category_id"]], mask_utils.decode(coco.annToRLE(a)).astype(bool))
                for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            ]
        images.append({"path": os.path.join(info["val_img_dir"], meta["file_name"]), "id": img_id, "gt": gt})
    return images


def oracle_bank(
    images: list[dict], feats: list[torch.Tensor], feat_dim: int, n_classes: int, device: torch.device
) -> MemoryBank:
    """Prototypes from the ground-truth objects of the benchmark images (an oracle bank)."""
    sums = torch.zeros(n_classes, feat_dim, device=device)
    counts = torch.zeros(n_classes, device=device)
    for image, f in zip(images, feats, strict=True):
        for cls, mask in image["gt"]:
            m = torch.from_numpy(mask).to(device)[None, None].float()
            m = F.interpolate(m, size=(256, 256), mode="nearest")[0] > 0
            if m.any():
                sums[cls] += matching.pool_mask_features(m, f)[0]
                counts[cls] += 1
    g = torch.Generator().manual_seed(0)
    missing = counts == 0  # a class absent from every image: a random prototype
    sums[missing] = torch.randn(int(missing.sum()), feat_dim, generator=g).to(device)
    bank = MemoryBank(n_classes, 1, feat_dim).to(device)
    bank.mem_feats_ins_avg[:, 0] = F.normalize(sums, dim=1)
    bank.mem_fill_counts.fill_(1)
    bank.mem_cat_ids.copy_(torch.arange(n_classes))
    bank.mem_postprocessed.fill_(True)
    return bank


# --------------------------------------------------------------------------- the straightforward path


# --------------------------------------------------------------------------- one run


def run_path(
    name: str,
    images: list[dict],
    proposer: Sam2PointGridProposer,
    seg: ReferenceSegmenter,
    device: torch.device,
    naive: bool,
    adapt_threads: bool = True,
) -> dict:
    """Times the pipeline on every image; returns seconds per stage (summed), outputs, counts."""
    from no_time_to_train.data.images import load_square
    from no_time_to_train.evaluation.coco_results import encode_detections

    timer = StageTimes(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    outputs, wall, decode, counts, threads_used = [], 0.0, 0.0, defaultdict(int), []
    cpu_start = _cpu_seconds()
    timer.__enter__()
    share = torch.get_num_threads()
    for image in images:
        if device.type == "cpu" and adapt_threads:
            threads_used.append(adapt_cpu_threads(share))
        t0 = time.perf_counter()
        x, ori = load_square(image["path"], proposer.image_size)
        x = x[None].to(device)
        decode += time.perf_counter() - t0
        start = time.perf_counter()
        with torch.no_grad():
            props = proposer(x)
            with record_function("ntt::dinov2"):
                feats = seg.encoder(x)[0]
            if naive:
                det, _ = straightforward_score_proposals(seg, props, feats, ori)
            else:
                det = seg.score_proposals(props, feats, ori)
            with record_function("ntt::encoding"):
                records = encode_detections(
                    det.masks, det.boxes, det.scores, det.labels, image["id"], {0: 1, 1: 2, 2: 3}
                )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall += time.perf_counter() - start
        counts["prompts"] += proposer.points_per_side**2
        counts["kept"] += len(props)
        counts["detections"] += len(det)
        outputs.append({"proposals": props, "detections": det, "records": records})
    timer.__exit__(None, None, None)
    cpu = _cpu_seconds() - cpu_start
    seconds = {s: timer.seconds.get(s, 0.0) for s in STAGES}
    seconds["other"] = max(0.0, wall - sum(seconds.values()))
    result = {
        "name": name,
        "seconds": seconds,
        "wall": wall,
        "decode": decode,
        "counts": dict(counts),
        "outputs": outputs,
        "peak_rss_mb": peak_rss_mb(),
        "threads_per_image": threads_used,
        # CPU time of this process / (wall time x threads): well below 1 when other processes share the cores
        "cpu_utilisation": cpu / ((wall + decode) * torch.get_num_threads()),
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def compare_outputs(fast: dict, slow: dict) -> dict:
    """Largest differences between the two paths' proposals and detections, over all images.

    ``identical_detections``: same number, labels, boxes and masks (bit for bit). Both paths
    threshold logits that agree to float rounding, so a pixel whose full-resolution logit is within
    rounding of 0 can flip; ``equal_within_float_noise`` allows that: same number and labels, boxes
    within 1 px, fewer than 1e-4 of each mask's pixels differing, scores within 1e-4.
    """
    diff = {
        "logits": 0.0,
        "iou": 0.0,
        "scores": 0.0,
        "embeddings": 0.0,
        "boxes": 0.0,
        "mask_pixel_fraction": 0.0,
    }
    same_kept = same_dets = True
    mask_pixels = 0
    for a, b in zip(fast["outputs"], slow["outputs"], strict=True):
        pa, pb = a["proposals"], b["proposals"]
        if pa.points.shape != pb.points.shape or not torch.equal(pa.points, pb.points):
            same_kept = False
        elif len(pa):
            diff["logits"] = max(diff["logits"], float((pa.logits - pb.logits).abs().max()))
            diff["iou"] = max(diff["iou"], float((pa.iou - pb.iou).abs().max()))
        da, db = a["detections"], b["detections"]
        if len(da) != len(db) or not torch.equal(da.labels, db.labels):
            same_dets = False
            continue
        if len(da):
            flips = (da.masks != db.masks).flatten(1).sum(1)
            area = (da.masks | db.masks).flatten(1).sum(1).clamp(min=1)
            mask_pixels += int(flips.sum())
            diff["mask_pixel_fraction"] = max(diff["mask_pixel_fraction"], float((flips / area).max()))
            diff["boxes"] = max(diff["boxes"], float((da.boxes - db.boxes).abs().max()))
            diff["scores"] = max(diff["scores"], float((da.scores - db.scores).abs().max()))
            diff["embeddings"] = max(diff["embeddings"], float((da.embeddings - db.embeddings).abs().max()))
    noise_ok = diff["boxes"] <= 1 and diff["mask_pixel_fraction"] < 1e-4 and diff["scores"] < 1e-4
    return {
        "max_abs_diff": diff,
        "same_kept_prompts": same_kept,
        "differing_mask_pixels": mask_pixels,
        "identical_detections": same_dets and mask_pixels == 0 and diff["boxes"] == 0,
        "equal_within_float_noise": same_kept and same_dets and noise_ok,
    }


# --------------------------------------------------------------------------- report


def summarise(run: dict, n_images: int, macs: dict[str, int] | None = None) -> dict:
    sec = {k: v / n_images for k, v in run["seconds"].items()}
    total = sum(sec.values())
    floor = sum(sec[s] for s in FLOOR)
    out = {
        "seconds_per_image": sec,
        "share": {k: (v / total if total > 0 else 0.0) for k, v in sec.items()},
        "total_per_image": total,
        "images_per_second": 1.0 / total if total > 0 else float("inf"),
        "floor_per_image": floor,
        "outside_floor_share": 1.0 - floor / total if total > 0 else 0.0,
        "decode_per_image": run["decode"] / n_images,
        "prompts_per_image": run["counts"]["prompts"] / n_images,
        "kept_per_image": run["counts"]["kept"] / n_images,
        "detections_per_image": run["counts"]["detections"] / n_images,
        "peak_rss_mb": run["peak_rss_mb"],
        "cpu_utilisation": run["cpu_utilisation"],
    }
    if "peak_gpu_mb" in run:
        out["peak_gpu_mb"] = run["peak_gpu_mb"]
    if macs is not None:
        flops = 2 * (
            macs["ours_per_image"]
            + out["prompts_per_image"] * macs["ours_transformer_per_prompt"]
            + out["kept_per_image"] * macs["ours_upscaling_per_kept"]
        )
        dec_time = sec["decoder_transformer"] + sec["iou_filter"] + sec["upscaling"]
        out["decoder_gflop_per_image"] = flops / 1e9
        out["decoder_gflops_per_second"] = flops / dec_time / 1e9 if dec_time > 0 else 0.0
    return out


def _table(summary: dict, title: str, other: dict | None = None) -> str:
    sec, share = summary["seconds_per_image"], summary["share"]
    head = f"{'stage':<22}{'s/image':>10}{'share':>8}  floor"
    if other is not None:
        head += f"{'straightforward':>17}{'speed-up':>10}"
    lines = [title, head, "-" * len(head)]
    for stage in (*STAGES, "other"):
        row = (
            f"{stage:<22}{sec[stage]:>10.3f}{100 * share[stage]:>7.1f}%  {'yes' if stage in FLOOR else '':<5}"
        )
        if other is not None:
            o = other["seconds_per_image"][stage]
            speed = f"{o / sec[stage]:.1f}x" if sec[stage] > 1e-4 and o > 1e-4 else "-"
            row += f"{o:>17.3f}{speed:>10}"
        lines.append(row)
    total = f"{'total':<22}{summary['total_per_image']:>10.3f}{100.0:>7.1f}%       "
    if other is not None:
        o = other["total_per_image"]
        total += f"{o:>17.3f}{o / summary['total_per_image']:>9.2f}x"
    lines += ["-" * len(head), total]
    if other is not None:
        lines.append(
            "(straightforward: the official decoder's upscaling of every prompt is in decoder_transformer)"
        )
    return "\n".join(lines)


def report(
    args: argparse.Namespace, device: torch.device, fast: dict, slow: dict | None, macs: dict, load: dict
) -> str:
    f = fast
    lines = [
        f"SAM2 {sam2_config_name(args.sam2)} + {args.encoder}, {args.images} image(s) of ~1024 px, device {device}, "
        f"precision {args.precision}, torch threads {torch.get_num_threads()}",
        f"1-min load average before / after the timed runs: {load['before']:.2f} / {load['after']:.2f} on "
        f"{load['cpus']} CPUs; this process used {100 * f['cpu_utilisation']:.0f} % of its threads' wall time "
        "(other processes on the same cores inflate the times)",
        f"points_per_side {args.points_per_side} ({int(f['prompts_per_image'])} prompts), testing_point_bs "
        f"{args.point_bs}, iou_thr {args.iou_thr}: {f['kept_per_image']:.1f} prompts kept per image, "
        f"{f['detections_per_image']:.1f} detections",
        "",
        _table(f, "Per-image time, this implementation", slow),
        "",
        f"images/s {f['images_per_second']:.4f}; floor (network forward passes) {f['floor_per_image']:.2f} s/image; "
        f"outside the floor {100 * f['outside_floor_share']:.1f} %",
        f"image decode + resize {f['decode_per_image']:.3f} s/image (not in the total: DataLoader workers overlap it)",
        f"peak RSS {f['peak_rss_mb']:.0f} MB"
        + (f", peak GPU memory {f['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in f else ""),
        "",
        "Mask decoder multiply-adds (matrix products only, counted from the module shapes; 1 MAC = 2 FLOP):",
        f"  official MaskDecoder.forward: {2 * macs['official_per_prompt'] / 1e9:.2f} GFLOP per prompt",
        f"  ours: {2 * macs['ours_per_image'] / 1e9:.2f} GFLOP per image + "
        f"{2 * macs['ours_transformer_per_prompt'] / 1e9:.2f} GFLOP per prompt (transformer, IoU head) + "
        f"{2 * macs['ours_upscaling_per_kept'] / 1e9:.2f} GFLOP per kept prompt (upscaling)",
        f"  this run: {f['decoder_gflop_per_image']:.0f} GFLOP per image in "
        f"{f['seconds_per_image']['decoder_transformer'] + f['seconds_per_image']['iou_filter'] + f['seconds_per_image']['upscaling']:.2f} s "
        f"= {f['decoder_gflops_per_second']:.1f} GFLOP/s",
    ]
    if sam2_config_name(args.sam2) == "sam2_hiera_t.yaml" and args.encoder == "dinov2_small":
        lo, hi = REFERENCE_SECONDS
        lines.append(
            f"Reference implementation measured at {lo:.0f}-{hi:.0f} s/image (test step, 2 CPU cores): "
            f"{lo / f['total_per_image']:.1f}-{hi / f['total_per_image']:.1f}x faster"
        )
    if slow is not None:
        c = slow["compare"]
        d = c["max_abs_diff"]
        lines += [
            "",
            f"Straightforward path (official decoder, dense pooling, full-resolution float merge): "
            f"{slow['total_per_image']:.2f} s/image, peak RSS {slow['peak_rss_mb']:.0f} MB, CPU utilisation "
            f"{100 * slow['cpu_utilisation']:.0f} %"
            + (f", peak GPU {slow['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in slow else ""),
            f"speed-up {slow['total_per_image'] / f['total_per_image']:.2f}x overall, "
            f"{(slow['seconds_per_image']['decoder_transformer'] + slow['seconds_per_image']['iou_filter'] + slow['seconds_per_image']['upscaling']) / (f['seconds_per_image']['decoder_transformer'] + f['seconds_per_image']['iou_filter'] + f['seconds_per_image']['upscaling']):.2f}x in the mask decoder",
            f"same kept prompts: {c['same_kept_prompts']}; max |diff| logits {d['logits']:.2e}, IoU {d['iou']:.2e}, "
            f"scores {d['scores']:.2e}, embeddings {d['embeddings']:.2e}, boxes {d['boxes']:.0f} px",
            f"detections bit-identical: {c['identical_detections']} ({c['differing_mask_pixels']} mask pixels differ, "
            f"at most {100 * d['mask_pixel_fraction']:.4f} % of a mask); equal within float noise: "
            f"{c['equal_within_float_noise']}",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--sam2", default="t", help="t, s, b+, l, or a config name (sam2_hiera_l.yaml, sam2.1_hiera_t.yaml)"
    )
    p.add_argument(
        "--encoder", default="dinov2_small",
        help="any encoder_cfg.name: dinov2_small ... dinov2_giant_reg, dinov3_*, clip_*, PE-Spatial-*",
    )  # fmt: skip
    p.add_argument(
        "--encoders", nargs="+", default=None, metavar="NAME",
        help="run once per encoder and print a per-image table of them ('families': the smallest\n"
             "member of each family: dinov2_small dinov3_small clip_b32 PE-Spatial-L14-448)",
    )  # fmt: skip
    p.add_argument("--images", type=int, default=2, help="generated ~1024-px images (default 2)")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--point-bs", type=int, default=256, help="testing_point_bs")
    p.add_argument("--iou-thr", type=float, default=0.4)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="autocast for the encoders (GPU)",
    )
    p.add_argument("--compare", action="store_true", help="also run the straightforward implementation")
    p.add_argument(
        "--decoder-chunk", type=int, default=None, help="prompts per pass of our decoder (default: auto)"
    )
    p.add_argument(
        "--upscale-chunk", type=int, default=None, help="kept prompts upscaled together (default: auto)"
    )
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the usable CPUs, as the CLI chooses)")  # fmt: skip
    p.add_argument("--load", type=int, default=0, metavar="K",
                   help="also time the runs with K busy competitor processes on the same cores\n"
                        "(started and stopped by the benchmark); quiet and loaded times side by side")  # fmt: skip
    p.add_argument(
        "--warmup", type=int, choices=[0, 1], default=1, help="untimed 2x2-prompt pass first (default 1)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.images < 1 or args.points_per_side < 1 or args.point_bs < 1:
        p.error("--images, --points-per-side and --point-bs must be positive")
    if not args.device.startswith("cuda") and args.precision != "fp32":
        print(f"--precision {args.precision} applies to CUDA only; running fp32 on {args.device}")
        args.precision = "fp32"
    return args


def encoder_table(argv: Sequence[str], names: list[str]) -> dict:
    """One full run per encoder (``--encoder NAME``), then a table of their per-image figures."""
    from no_time_to_train.encoders import encoder_spec, smallest_of_each

    if names == ["families"]:
        names = list(smallest_of_each().values())
    rest, skip = [], False
    for a in argv:  # the other arguments, without --encoders / --json and their values
        if skip and not a.startswith("--"):
            continue
        skip = a in ("--encoders", "--json", "--encoder")
        if not skip:
            rest.append(a)
    results = {name: main([*rest, "--encoder", name]) for name in names}
    lines = ["", "PER-IMAGE TIME BY ENCODER (test step, same images, prompts and segmenter)",
             f"{'encoder':22s} {'input':>9s} {'grid':>5s} {'D':>5s} {'encoder s':>10s} {'total s':>9s}"]  # fmt: skip
    for name, r in results.items():
        spec = encoder_spec(name)
        sec = r["ours"]["seconds_per_image"]
        lines.append(f"{name:22s} {spec.img_size:>5d}/{spec.patch_size:<3d} {spec.img_size // spec.patch_size:>5d} "
                     f"{spec.feat_dim:>5d} {sec['dinov2']:>10.3f} {r['ours']['total_per_image']:>9.3f}")  # fmt: skip
    print("\n".join(lines))
    return {"encoders": results}


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the report and return the figures (also written by ``--json``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.encoders:
        table = encoder_table(argv, args.encoders)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(table, indent=2, default=_json_default))
        return table
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    adapt = args.threads is None  # --threads fixes the count; otherwise it follows the free CPUs
    if device.type == "cpu":
        configure_cpu_threads(args.threads)
    elif args.threads:
        torch.set_num_threads(args.threads)
    sam2, encoder = build_networks(args, device)
    cfg = InferenceCfg(
        points_per_side=args.points_per_side, testing_point_bs=args.point_bs, iou_thr=args.iou_thr
    )
    with tempfile.TemporaryDirectory(prefix="ntt_bench_") as tmp:
        images = make_images(Path(tmp), args.images, args.seed)
        from no_time_to_train.data.images import load_square

        with torch.no_grad():  # the oracle prototypes (not timed)
            feats = [encoder(load_square(im["path"], 1024)[0][None].to(device))[0] for im in images]
        feat_dim = feats[0].shape[-1]
        bank = oracle_bank(images, feats, feat_dim, len(CLASSES), device)

        def pipeline(fast: bool) -> tuple[Sam2PointGridProposer, ReferenceSegmenter]:
            proposer = Sam2PointGridProposer(
                sam2,
                cfg.points_per_side,
                cfg.testing_point_bs,
                cfg.iou_thr,
                fast=fast,
                decoder_chunk=args.decoder_chunk,
                upscale_chunk=args.upscale_chunk,
            ).to(device)
            compute = ComputeCfg(pooling="separable" if fast else "dense")
            return proposer, ReferenceSegmenter(bank, encoder=encoder, proposer=proposer, infer_cfg=cfg,
                                                compute_cfg=compute)  # fmt: skip

        paths = [True, False] if args.compare else [True]
        if args.warmup:  # one-time costs (kernel set-up, first allocations) kept out of the figures
            for is_fast in paths:
                proposer, seg = pipeline(is_fast)
                proposer.points_per_side = 2
                run_path("warm-up", images[:1], proposer, seg, device, naive=not is_fast, adapt_threads=adapt)
        load_before = os.getloadavg()
        fast = run_path("ours", images, *pipeline(True), device, naive=False, adapt_threads=adapt)
        slow = None
        if args.compare and not args.load:
            slow = run_path(
                "straightforward", images, *pipeline(False), device, naive=True, adapt_threads=adapt
            )
        load_after = os.getloadavg()
        loaded = loaded_slow = None
        if args.load:
            with BusyCompetitors(args.load):
                loaded = run_path(
                    "ours, loaded", images, *pipeline(True), device, naive=False, adapt_threads=adapt
                )
                if args.compare:
                    loaded_slow = run_path(
                        "straightforward, loaded",
                        images,
                        *pipeline(False),
                        device,
                        naive=True,
                        adapt_threads=adapt,
                    )
            if device.type == "cpu":
                configure_cpu_threads(args.threads)  # back to the quiet share for the report

    macs = decoder_macs(sam2.sam_mask_decoder, int(sam2.sam_prompt_encoder.image_embedding_size[0]) ** 2)
    summary = summarise(fast, args.images, macs)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ours": summary,
    }
    result["decoder_gflop"] = {k: 2 * v / 1e9 for k, v in macs.items()}
    result["load_average"] = {"before": load_before[0], "after": load_after[0], "cpus": os.cpu_count()}
    result["threads"] = fast["threads_per_image"] or [torch.get_num_threads()]
    result["decoder_chunk"] = decoder_chunk(device, args.decoder_chunk)
    if slow is not None:
        result["straightforward"] = summarise(slow, args.images)
        result["straightforward"]["compare"] = compare_outputs(fast, slow)
        result["speed_up"] = result["straightforward"]["total_per_image"] / summary["total_per_image"]
    print(report(args, device, summary, result.get("straightforward"), macs, result["load_average"]))
    if loaded is not None:
        result["loaded"] = summarise(loaded, args.images, macs)
        result["loaded_threads"] = loaded["threads_per_image"] or [torch.get_num_threads()]
        if loaded_slow is not None:
            result["straightforward_loaded"] = summarise(loaded_slow, args.images)
            result["straightforward_loaded"]["compare"] = compare_outputs(loaded, loaded_slow)
        print(load_report(args, result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=_json_default))
    return result


class BusyCompetitors:
    """``k`` CPU-bound processes of our own (pure Python loops), for the duration of a ``with``:
    the normal state of a shared workstation or of a cluster node."""

    def __init__(self, k: int):
        self.k, self.procs = k, []

    def __enter__(self) -> BusyCompetitors:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_spin, daemon=True) for _ in range(self.k)]
        for proc in self.procs:
            proc.start()
        time.sleep(0.5)  # let them start spinning
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join(timeout=10)


def _spin() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def load_report(args: argparse.Namespace, result: dict) -> str:
    """Quiet and loaded per-image times side by side."""
    quiet, loaded = result["ours"], result["loaded"]
    lines = [
        "",
        f"Under load: {args.load} busy competitor process(es) on {os.cpu_count()} CPUs; torch threads "
        f"{result['threads']} quiet, {result['loaded_threads']} loaded"
        f"{' (following the free CPUs)' if args.threads is None else ''}; decoder chunk {result['decoder_chunk']}",
        f"{'':34} {'quiet s/image':>14} {'loaded s/image':>15} {'loaded/quiet':>13}",
        f"{'this implementation':34} {quiet['total_per_image']:14.2f} {loaded['total_per_image']:15.2f} "
        f"{loaded['total_per_image'] / quiet['total_per_image']:13.2f}",
        f"{'  decoder GFLOP/s':34} {quiet['decoder_gflops_per_second']:14.1f} {loaded['decoder_gflops_per_second']:15.1f}",
    ]
    slow = result.get("straightforward_loaded")
    if slow is not None:
        lines += [
            f"{'straightforward path':34} {'':>14} {slow['total_per_image']:15.2f}",
            f"under the same load this implementation is {slow['total_per_image'] / loaded['total_per_image']:.2f}x "
            f"faster than the straightforward path; detections bit-identical: {slow['compare']['identical_detections']}",
        ]
    return "\n".join(lines)


def _json_default(x):  # noqa: ANN001, ANN202
    if isinstance(x, (np.generic, torch.Tensor)):
        return x.item()
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    main()
