"""Figures of folder labelling: peak memory against the number of images, and images per second
for one and two processes.

    python scripts/label_folder_figures.py --images 50 500 --networks oracle
    python scripts/label_folder_figures.py --images 20 --devices 1 2 --networks tiny

Generates a folder of N images (the synthetic COCO generator, no json used), a memory file, then
runs ``run_lightening.py test`` with ``json_file: null`` and ``--export_dataset`` in a child
process per setting and prints its wall time, images per second and peak resident memory (the
largest of the run's processes, from ``getrusage``). ``--networks tiny``: random-weight SAM2-t +
DINOv2-S with a 4 x 4 prompt grid (the real code path, meaningless detections); ``oracle``: the
tests' colour oracles (``tests/oracle.py``: the pipeline's own cost, no network).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "no_time_to_train" / "new_exps" / "coco_fewshot_10shot_Sam2L.yaml"


def _write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _model(networks: str, d: dict, ckpts: dict) -> dict:
    ids = d["category_ids"]
    args: dict = {"model_cfg": {"memory_bank_cfg": {"category_num": len(ids), "length": 2}},
                  "data_load_cfgs": {"workers": 1}}  # fmt: skip
    if networks == "oracle":
        args["class_colors"] = [list(d["class_colors"][c]) for c in ids]
        args["distractor_colors"] = [list(c) for c in d["distractor_colors"]]
        return {"class_path": "tests.oracle.OracleMatcherModel", "init_args": args}
    args["model_cfg"] |= {"sam2_cfg_file": "sam2_hiera_t.yaml", "sam2_ckpt_path": ckpts["sam2"],
                          "encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": ckpts["dinov2"],
                          "sam2_infer_cfgs": {"points_per_side": 4}}  # fmt: skip
    return {"init_args": args}


# Runs the command in a fresh process whose children's peak RSS is this run's alone (getrusage's
# children figure is a maximum over every child a process ever waited for).
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def _run(argv: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and the peak RSS (MiB) of the largest process of the run."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, str(REPO / "run_lightening.py"), *argv],
                          cwd=cwd, env=env, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    peak = int(proc.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])
    return seconds, peak // 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, nargs="+", default=[50, 500], help="folder sizes (default: 50 500)")
    p.add_argument("--devices", type=int, nargs="+", default=[1], help="CPU processes per run (default: 1)")
    p.add_argument("--networks", choices=("oracle", "tiny"), default="oracle")
    p.add_argument("--work", help="working folder (default: a temporary one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from no_time_to_train.data.synthetic import generate_coco_dataset
    from no_time_to_train.tools.random_checkpoints import (
        write_random_encoder_checkpoint,
        write_random_sam2_checkpoint,
    )

    work = Path(args.work or tempfile.mkdtemp(prefix="ntt_label_"))
    ckpts = {}
    if args.networks == "tiny":
        ckpts = {"sam2": str(write_random_sam2_checkpoint("sam2_hiera_t.yaml", work / "sam2_hiera_tiny.pt")),
                 "dinov2": str(write_random_encoder_checkpoint("dinov2_small", work / "dinov2_vits14_pretrain.pth"))}  # fmt: skip
    rows = []
    for n in args.images:
        d = generate_coco_dataset(work / f"data{n}", n_train=6, n_val=n, class_names=("person", "car", "bird"),
                                  n_shot=2, seed=1, image_format="jpg")  # fmt: skip
        data = {"fill_memory": {"root": d["train_img_dir"], "json_file": d["train_json"],
                                "memory_pkl": d["reference_pkl"], "cat_names": "person,car,bird"},
                "test": {"root": d["val_img_dir"], "json_file": None}}  # fmt: skip
        model = _model(args.networks, d, ckpts)
        model["init_args"]["dataset_cfgs"] = data
        trainer = {"accelerator": "cpu", "logger": False, "callbacks": [], "enable_progress_bar": False}
        cfg = _write(work / f"cfg{n}.yaml", {"model": model, "trainer": trainer})
        base = ["test", "--config", str(CONFIG), "--config", cfg]
        mem, post = work / f"m{n}.ckpt", work / f"p{n}.ckpt"
        _run(
            [*base, "--model.test_mode", "fill_memory", "--out_path", str(mem), "--trainer.devices", "1"],
            work,
        )
        _run([*base, "--model.test_mode", "postprocess_memory", "--ckpt_path", str(mem), "--out_path", str(post),
              "--trainer.devices", "1"], work)  # fmt: skip
        for devices in args.devices:
            out = work / f"labels{n}_{devices}.json"
            extra = ["--trainer.strategy", "ddp"] if devices > 1 else []
            seconds, rss = _run([*base, "--model.test_mode", "test", "--ckpt_path", str(post), "--export_dataset",
                                 str(out), "--trainer.devices", str(devices), *extra], work)  # fmt: skip
            images = len(json.loads(out.read_text())["images"])
            rows.append((n, devices, seconds, images / seconds, rss))
            print(f"{n:5d} images  {devices} process(es)  {seconds:7.1f} s  {images / seconds:6.2f} images/s  "
                  f"peak RSS {rss} MiB ({args.networks})", flush=True)  # fmt: skip
    print("\n| images | processes | seconds | images/s | peak RSS (MiB) |\n|---|---|---|---|---|")
    for n, dev, sec, ips, rss in rows:
        print(f"| {n} | {dev} | {sec:.1f} | {ips:.2f} | {rss} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
