"""The reference README's COCO few-shot commands (steps 0-3), run verbatim with SHOTS=1, GPUS=1.

They run in a scratch folder laid out like the repository root: ``run_lightening.py`` and the
package, a generated ``data/coco/`` and random-weight checkpoints at the README's paths
(``checkpoints/sam2_hiera_large.pt``, ``checkpoints/dinov2/dinov2_vitl14_pretrain.pth``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from no_time_to_train.data.splits import COCO_FEW_SHOT_CLASSES
from no_time_to_train.data.synthetic import generate_coco_dataset
from no_time_to_train.tools.random_checkpoints import main as write_checkpoints

from ..conftest import REPO

# Copied from the reference README (variables, then steps 0-3); only SHOTS and GPUS differ.
README_COMMANDS = r"""
CONFIG=./no_time_to_train/new_exps/coco_fewshot_10shot_Sam2L.yaml
CLASS_SPLIT="few_shot_classes"
RESULTS_DIR=work_dirs/few_shot_results
SHOTS=1
SEED=33
GPUS=1

mkdir -p $RESULTS_DIR
FILENAME=few_shot_${SHOTS}shot_seed${SEED}.pkl

python no_time_to_train/dataset/few_shot_sampling.py \
        --n-shot $SHOTS \
        --out-path ${RESULTS_DIR}/${FILENAME} \
        --seed $SEED \
        --dataset $CLASS_SPLIT

python run_lightening.py test --config $CONFIG \
                              --model.test_mode fill_memory \
                              --out_path ${RESULTS_DIR}/memory.ckpt \
                              --model.init_args.model_cfg.memory_bank_cfg.length $SHOTS \
                              --model.init_args.dataset_cfgs.fill_memory.memory_pkl ${RESULTS_DIR}/${FILENAME} \
                              --model.init_args.dataset_cfgs.fill_memory.memory_length $SHOTS \
                              --model.init_args.dataset_cfgs.fill_memory.class_split $CLASS_SPLIT \
                              --trainer.logger.save_dir ${RESULTS_DIR}/ \
                              --trainer.devices $GPUS

python run_lightening.py test --config $CONFIG \
                              --model.test_mode postprocess_memory \
                              --model.init_args.model_cfg.memory_bank_cfg.length $SHOTS \
                              --ckpt_path ${RESULTS_DIR}/memory.ckpt \
                              --out_path ${RESULTS_DIR}/memory_postprocessed.ckpt \
                              --trainer.devices 1

python run_lightening.py test --config $CONFIG  \
                              --ckpt_path ${RESULTS_DIR}/memory_postprocessed.ckpt \
                              --model.init_args.test_mode test \
                              --model.init_args.model_cfg.memory_bank_cfg.length $SHOTS \
                              --model.init_args.model_cfg.dataset_name $CLASS_SPLIT \
                              --model.init_args.dataset_cfgs.test.class_split $CLASS_SPLIT \
                              --trainer.logger.save_dir ${RESULTS_DIR}/ \
                              --trainer.devices $GPUS
"""


@pytest.mark.slow
def test_reference_readme_coco_commands_verbatim(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("run_lightening.py", "no_time_to_train"):
        os.symlink(REPO / name, root / name)
    generate_coco_dataset(
        root / "data" / "coco", n_train=12, n_val=1, class_names=COCO_FEW_SHOT_CLASSES, n_shot=1, seed=5
    )
    assert write_checkpoints(["--random-weights", "--dest", str(root / "checkpoints")]) == 0

    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", README_COMMANDS], cwd=root, env=env, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for title in ("BBOX RESULTS:", "SEGM RESULTS:"):
        block = out.split(title, 1)[1].splitlines()[1:13]
        assert len(block) == 12 and all(line.strip().startswith("Average") for line in block), out[-3000:]

    results = root / "work_dirs" / "few_shot_results"
    post = torch.load(results / "memory_postprocessed.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith("memory.") for k in post["state_dict"])  # no backbone weights
    assert post["state_dict"]["memory.mem_feats_ins_avg"].shape == (20, 1, 1024)
    assert (results / "memory_postprocessed.ckpt").stat().st_size < 5 * 2**20
