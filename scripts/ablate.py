"""One command for an ablation table: sampling -> fill -> postprocess -> test for every setting.

    python scripts/ablate.py --configs no_time_to_train/new_exps/coco_fewshot_10shot_Sam2L.yaml \\
        no_time_to_train/new_exps/dinov3/coco_DinoL_Sam2L.yaml --shots 1 10 --seeds 33 \\
        [--class-split few_shot_classes] [--devices 1] [--out work_dirs/ablation] [-- EXTRA CLI ARGS]

For each shot count and seed it samples one reference set (``few_shot_sampling.py``, shared by
all configs), then runs the README's three ``run_lightening.py test`` steps per config, exactly as
a user would, each in its own folder ``OUT/<config stem>/<shots>shot_<seed>seed/``. Arguments
after ``--`` are passed to every ``run_lightening.py`` call (e.g. other data paths).

It writes ``OUT/ablation.csv`` and ``OUT/ablation.md`` (one row per setting: encoder, segmenter,
shots, seed, bbox / segm AP and AP50, seconds per test image (the test loop, without building the
networks) and the postprocessed memory file's size) and ``OUT/ablation.png`` (segm AP against
shots, one line per config). A setting that fails is reported in the table with its error and
the others go on; the exit status is then 1. A finished setting is reused on a re-run when its
summary exists (``--force`` recomputes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("config", "encoder", "segmenter", "shots", "seed", "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50",
           "sec_per_image", "memory_MB", "status")  # fmt: skip


def _run(cmd: list[str], log: Path) -> None:
    """Run one step; its output goes to ``log``; a failure raises with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=os.getcwd())
    if proc.returncode:
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(
            f"{Path(cmd[1]).name} exited with {proc.returncode}: {' '.join(tail)} (log: {log})"
        )


def _logger(save_dir: Path, version: str) -> list[str]:
    spec = {"class_path": "pytorch_lightning.loggers.CSVLogger",
            "init_args": {"save_dir": str(save_dir), "version": version}}  # fmt: skip
    return ["--trainer.logger", json.dumps(spec)]


def run_setting(
    cfg: Path, shots: int, seed: int, refs: Path, args: argparse.Namespace, extra: list[str]
) -> dict:
    run = Path(args.out) / cfg.stem / f"{shots}shot_{seed}seed"
    summary_path = run / "lightning_logs" / "test" / "summary.json"
    mem, post = run / "memory.ckpt", run / "memory_postprocessed.ckpt"
    if args.force or not summary_path.is_file():
        cli = [sys.executable, str(REPO / "run_lightening.py"), "test", "--config", str(cfg)]
        common = ["--model.init_args.model_cfg.memory_bank_cfg.length", str(shots),
                  "--trainer.devices", str(args.devices), *extra]  # fmt: skip
        split = ["--model.init_args.dataset_cfgs.fill_memory.class_split", args.class_split]
        _run([*cli, "--model.test_mode", "fill_memory", "--out_path", str(mem), *common, *split,
              "--model.init_args.dataset_cfgs.fill_memory.memory_pkl", str(refs),
              "--model.init_args.dataset_cfgs.fill_memory.memory_length", str(shots),
              *_logger(run, "fill_memory")], run / "fill_memory.log")  # fmt: skip
        _run([*cli, "--model.test_mode", "postprocess_memory", "--ckpt_path", str(mem), "--out_path", str(post),
              *common, *_logger(run, "postprocess_memory")], run / "postprocess_memory.log")  # fmt: skip
        _run([*cli, "--model.test_mode", "test", "--ckpt_path", str(post), *common,
              "--model.init_args.model_cfg.dataset_name", args.class_split,
              "--model.init_args.dataset_cfgs.test.class_split", args.class_split,
              "--export_result", str(run / "results.json"), *_logger(run, "test")], run / "test.log")  # fmt: skip
    summary = json.loads(summary_path.read_text())
    stats = summary["stats"]
    row = {"config": str(cfg), "encoder": summary["encoder"], "segmenter": summary["sam2_cfg_file"],
           "shots": shots, "seed": seed, "sec_per_image": summary["seconds_per_image"],
           "memory_MB": round(post.stat().st_size / 2**20, 2), "status": "ok"}  # fmt: skip
    for t in ("bbox", "segm"):
        row[f"{t}_AP"] = round(100 * stats.get(t, {}).get("AP", float("nan")), 1)
        row[f"{t}_AP50"] = round(100 * stats.get(t, {}).get("AP50", float("nan")), 1)
    return row


def sample(shots: int, seed: int, args: argparse.Namespace) -> Path:
    refs = Path(args.out) / "references" / f"{args.class_split}_{shots}shot_{seed}seed.pkl"
    if args.force or not refs.is_file():
        cmd = [sys.executable, str(REPO / "no_time_to_train" / "dataset" / "few_shot_sampling.py"),
               "--n-shot", str(shots), "--out-path", str(refs), "--seed", str(seed), "--dataset", args.class_split]  # fmt: skip
        if args.sampling_json:
            cmd += ["--json", args.sampling_json]
        _run(cmd, refs.with_suffix(".log"))
    return refs


def write_table(rows: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "ablation.csv", out / "ablation.md", out / "ablation.png"]
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    paths[1].write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cfg in dict.fromkeys(r["config"] for r in rows):
        ok = [r for r in rows if r["config"] == cfg and r["status"] == "ok"]
        by_shots: dict[int, list[float]] = {}
        for r in ok:
            by_shots.setdefault(r["shots"], []).append(r["segm_AP"])
        xs = sorted(by_shots)
        if xs:
            ax.plot(xs, [sum(by_shots[x]) / len(by_shots[x]) for x in xs], marker="o", label=Path(cfg).stem)
    ax.set_xlabel("shots per class")
    ax.set_ylabel("segm AP (mean over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", required=True, type=Path, help="run configs (new_exps/...)")
    p.add_argument("--shots", nargs="+", type=int, default=[10])
    p.add_argument("--seeds", nargs="+", type=int, default=[33])
    p.add_argument("--class-split", default="few_shot_classes", help="few_shot_sampling.py --dataset value")
    p.add_argument(
        "--sampling-json", help="annotation file to sample references from (few_shot_sampling.py --json)"
    )
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--out", default="work_dirs/ablation")
    p.add_argument("--force", action="store_true", help="recompute settings that already have results")
    args = p.parse_args(argv)
    missing = [str(c) for c in args.configs if not c.is_file()]
    if missing:
        p.error(f"config(s) not found: {', '.join(missing)}")
    rows, failed = [], 0
    for shots in args.shots:
        for seed in args.seeds:
            try:
                refs = sample(shots, seed, args)
            except RuntimeError as err:
                print(f"sampling {shots} shots, seed {seed}: FAILED: {err}", file=sys.stderr)
                failed += len(args.configs)
                rows += [
                    {"config": str(c), "shots": shots, "seed": seed, "status": f"failed: {err}"}
                    for c in args.configs
                ]
                continue
            for cfg in args.configs:
                t0 = time.perf_counter()
                try:
                    row = run_setting(cfg, shots, seed, refs, args, extra)
                except (RuntimeError, OSError, KeyError, ValueError) as err:
                    failed += 1
                    row = {"config": str(cfg), "shots": shots, "seed": seed, "status": f"failed: {err}"}
                rows.append(row)
                took = time.perf_counter() - t0
                print(f"[ablate] {cfg.stem} {shots} shots seed {seed}: {row['status']} "
                      f"(segm AP {row.get('segm_AP', '-')}, {took:.0f} s)", flush=True)  # fmt: skip
    for path in write_table(rows, Path(args.out)):
        print(f"[ablate] wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
