#!/usr/bin/env bash
# COCO-20i few-shot semantic segmentation, one fold: K-shot reference sampling (seed 42) of the
# fold's 20 classes from COCO train2017, fill_memory, postprocess_memory, instance test on val2017,
# then the semantic mIoU of the instance predictions (no_time_to_train/dataset/coco_inst_to_segm.py).
#
# Usage (from the repository root):
#   bash scripts/few_shot_coco_semantic_pipeline.sh COCO_SPLIT [GPUS]    COCO_SPLIT: 1-4; GPUS (default 1)
#
# Results: work_dirs/coco_semantic_split_{N}/{K}shot_seed42/ (results.json, miou.json, test.log), and
# inst_to_segm/coco_inst_semantic_split_{N}_{K}shot_42seed_results.json (the reference's location).
# Environment (optional): SHOTS ("1 5"), SEED (42), COCO_ROOT (./data/coco), WORK_DIR (./work_dirs),
# SCORE_THR (0.5), PYTHON, YAML_PATH, EXTRA_CONFIG (a second --config), TEST_ARGS, ACCELERATOR.
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
  sed -n '6,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
COCO_SPLIT=$1
GPUS=${2:-1}
[[ "$COCO_SPLIT" =~ ^[1-4]$ ]] || { echo "error: COCO_SPLIT must be 1, 2, 3 or 4 (got '$COCO_SPLIT')." >&2; exit 2; }
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "error: GPUS must be a positive number (got '$GPUS')." >&2; exit 2; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/steps.sh
. "$REPO_ROOT/scripts/lib/steps.sh"
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
YAML_PATH=${YAML_PATH:-$REPO_ROOT/no_time_to_train/new_exps/coco_fewshot_10shot_Sam2L.yaml}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
read -r -a SHOT_LIST <<< "${SHOTS:-1 5}"
SEED=${SEED:-42}
CATEGORY_NUM=20
CLASS_SPLIT=coco_semantic_split_${COCO_SPLIT}
COCO_ROOT=${COCO_ROOT:-./data/coco}
TRAIN_JSON=$COCO_ROOT/annotations/instances_train2017.json
VAL_JSON=$COCO_ROOT/annotations/instances_val2017.json
SCORE_THR=${SCORE_THR:-0.5}
RESULTS_ROOT=${WORK_DIR:-./work_dirs}/$CLASS_SPLIT
ntt_args_from_env  # CONFIGS, TRAINER_ARGS, EXTRA_TEST_ARGS

for f in "$TRAIN_JSON" "$VAL_JSON"; do
  [ -f "$f" ] || { echo "error: $f not found; see data/README.md (COCO) or set COCO_ROOT." >&2; exit 1; }
done

for SHOT in "${SHOT_LIST[@]}"; do
  RESULTS_DIR=$RESULTS_ROOT/${SHOT}shot_seed${SEED}
  PKL=$RESULTS_DIR/${CLASS_SPLIT}_${SHOT}shot_seed${SEED}.pkl
  mkdir -p "$RESULTS_DIR"
  echo "==> [$CLASS_SPLIT, ${SHOT}-shot, seed $SEED] results in $RESULTS_DIR"
  ntt_sample "$SHOT" "$PKL" "$SEED" "$CLASS_SPLIT" "$TRAIN_JSON"
  ntt_common_args "$CLASS_SPLIT" "$SHOT" "$CATEGORY_NUM" "$RESULTS_DIR"
  ntt_fill "$RESULTS_DIR/memory.ckpt" "$COCO_ROOT/train2017" "$TRAIN_JSON" "$PKL" "$SHOT" \
    "class_split=$CLASS_SPLIT" "$GPUS"
  ntt_postprocess "$RESULTS_DIR/memory.ckpt" "$RESULTS_DIR/memory_postprocessed.ckpt"
  ntt_test --no-imgs-path "$RESULTS_DIR/memory_postprocessed.ckpt" "$COCO_ROOT/val2017" "$VAL_JSON" \
    "class_split=$CLASS_SPLIT" "$RESULTS_DIR" "$GPUS" \
    --coco_semantic_split "$COCO_SPLIT" --n_shot "$SHOT" --seed "$SEED" \
    ${EXTRA_TEST_ARGS[@]+"${EXTRA_TEST_ARGS[@]}"}

  "$PYTHON" "$REPO_ROOT/no_time_to_train/dataset/coco_inst_to_segm.py" \
    --results "$RESULTS_DIR/results.json" --gt "$VAL_JSON" --split "$COCO_SPLIT" \
    --score-thr "$SCORE_THR" --out "$RESULTS_DIR/miou.json" | tee "$RESULTS_DIR/miou.log"
done
