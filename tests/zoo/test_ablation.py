"""The ablation command end to end on generated data: the smallest member of every encoder family
(random-weight stand-ins in each official format), SAM2-t proposals, one table."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml

from no_time_to_train.data.splits import COCO_FEW_SHOT_CLASSES
from no_time_to_train.data.synthetic import generate_coco_dataset
from no_time_to_train.encoders import ENCODERS as ZOO
from no_time_to_train.encoders import smallest_of_each
from no_time_to_train.tools.random_checkpoints import main as write_checkpoints

from ..conftest import REPO

SMALLEST = smallest_of_each()

SHIPPED = {"dinov2": "coco_fewshot_10shot_Sam2L.yaml", "dinov3": "dinov3/coco_DinoL_Sam2L.yaml",
           "clip": "clip/coco_clipb32_Sam2L.yaml", "pe": "pe/coco_PEl14_Sam2L.yaml"}  # fmt: skip


def _family_config(root, family: str) -> str:
    """The shipped config of the family with its smallest encoder, at a tiny input (8 x 8 patches;
    CLIP B/32 at its own 224: 7 x 7) to keep the suite fast."""
    cfg = yaml.safe_load((REPO / "no_time_to_train" / "new_exps" / SHIPPED[family]).read_text())
    name = SMALLEST[family]
    spec = ZOO[name]
    size = spec.img_size if family == "clip" else 8 * spec.patch_size
    mc = cfg["model"]["init_args"]["model_cfg"]
    mc["encoder_cfg"] = {"name": name, "img_size": size, "patch_size": spec.patch_size}
    mc["encoder_ckpt_path"] = spec.ckpt_path
    cfg["model"]["init_args"]["dataset_cfgs"]["fill_memory"]["image_size"] = size
    path = root / f"ablate_{family}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path.name


@pytest.mark.slow
def test_ablation_table_for_every_family(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("run_lightening.py", "no_time_to_train"):
        os.symlink(REPO / name, root / name)
    generate_coco_dataset(root / "data" / "coco", n_train=12, n_val=1, class_names=COCO_FEW_SHOT_CLASSES,
                          n_shot=1, seed=5)  # fmt: skip
    encoders = [SMALLEST[f] for f in SHIPPED]
    assert write_checkpoints(["--random-weights", "--small", "--no-large", "--dest", str(root / "checkpoints"),
                              "--encoders", *encoders[1:]]) == 0  # fmt: skip
    configs = [_family_config(root, f) for f in SHIPPED]
    small = ["--model.init_args.model_cfg.sam2_cfg_file", "sam2_hiera_t.yaml",
             "--model.init_args.model_cfg.sam2_ckpt_path", "checkpoints/sam2_hiera_tiny.pt",
             "--model.init_args.model_cfg.sam2_infer_cfgs.points_per_side", "4",
             "--model.init_args.data_load_cfgs.workers", "0"]  # fmt: skip
    # The DINOv2 config names DINOv2-L: its smallest member comes through the same override route.
    cfg2 = yaml.safe_load((root / configs[0]).read_text())
    cfg2["model"]["init_args"]["model_cfg"]["encoder_ckpt_path"] = (
        "./checkpoints/dinov2/dinov2_vits14_pretrain.pth"
    )
    (root / configs[0]).write_text(yaml.safe_dump(cfg2, sort_keys=False))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "scripts" / "ablate.py"), "--configs", *configs, "--shots", "1",
           "--seeds", "33", "--out", "work_dirs/ablation", "--", *small]  # fmt: skip
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    table = root / "work_dirs" / "ablation"
    rows = list(csv.DictReader(open(table / "ablation.csv")))
    assert [r["encoder"] for r in rows] == encoders, rows
    for r in rows:
        assert r["status"] == "ok" and r["segmenter"] == "sam2_hiera_t.yaml"
        assert 0 <= float(r["segm_AP"]) <= 100 and 0 <= float(r["bbox_AP50"]) <= 100
        assert float(r["sec_per_image"]) > 0 and 0 < float(r["memory_MB"]) < 50
    md = (table / "ablation.md").read_text().splitlines()
    assert md[0].startswith("| config | encoder |") and len(md) == 2 + len(rows)
    assert (table / "ablation.png").stat().st_size > 1000
    # A memory file records the encoder: another encoder's run refuses it.
    post = table / "ablate_clip" / "1shot_33seed" / "memory_postprocessed.ckpt"
    proc = subprocess.run([sys.executable, "run_lightening.py", "test", "--config", configs[1], "--ckpt_path", str(post),
                           "--model.test_mode", "test", *small], cwd=root, env=env, capture_output=True, text=True)  # fmt: skip
    assert (
        proc.returncode == 2
        and "encoder: file has 'clip_b32', configuration has 'dinov3_small'" in proc.stderr
    )
    # A re-run reuses every finished setting.
    again = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count(": ok") == len(encoders)
