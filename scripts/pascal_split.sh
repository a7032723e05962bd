#!/usr/bin/env bash
# PASCAL VOC few-shot benchmark, one novel split: K-shot reference sampling (seed 33), fill_memory,
# postprocess_memory and test on VOC2007 test, for K in 1 2 3 5 10. The 5 novel classes of the
# split (pascal_voc_split_N) are evaluated; the paper reports nAP50.
#
# Usage (from the repository root):
#   bash scripts/pascal_split.sh PASCAL_SPLIT [GPUS]     PASCAL_SPLIT: 1, 2 or 3; GPUS: devices (default 1)
#
# Results: work_dirs/pascal_voc_split_{N}_seed33/{K}shot/ (reference pickle, memory files, results.json,
# test.log). Data layout: data/README.md (data/pascal_voc/allimages + annotations/*_with_segm.json).
# Environment (optional): SHOTS ("1 2 3 5 10"), SEED (33), VOC_ROOT (./data/pascal_voc), WORK_DIR
# (./work_dirs), PYTHON, YAML_PATH, EXTRA_CONFIG (a second --config), PLOT (1: draw the references),
# TEST_ARGS (extra test arguments), ACCELERATOR (e.g. cpu).
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
  sed -n '6,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
PASCAL_SPLIT=$1
GPUS=${2:-1}
[[ "$PASCAL_SPLIT" =~ ^[123]$ ]] || { echo "error: PASCAL_SPLIT must be 1, 2 or 3 (got '$PASCAL_SPLIT')." >&2; exit 2; }
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "error: GPUS must be a positive number of devices (got '$GPUS')." >&2; exit 2; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/steps.sh
. "$REPO_ROOT/scripts/lib/steps.sh"
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
YAML_PATH=${YAML_PATH:-$REPO_ROOT/no_time_to_train/pl_configs/matching_pascal_voc_few_shot_template.yaml}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
read -r -a SHOT_LIST <<< "${SHOTS:-1 2 3 5 10}"
SEED=${SEED:-33}
CATEGORY_NUM=5
CLASS_SPLIT=pascal_voc_split_${PASCAL_SPLIT}
VOC_ROOT=${VOC_ROOT:-./data/pascal_voc}
IMAGES=$VOC_ROOT/allimages
TRAIN_JSON=$VOC_ROOT/annotations/voc0712_trainval_with_segm.json
TEST_JSON=$VOC_ROOT/annotations/voc07_test_with_segm.json
RESULTS_ROOT=${WORK_DIR:-./work_dirs}/${CLASS_SPLIT}_seed${SEED}
PLOT=${PLOT:-1}

for f in "$TRAIN_JSON" "$TEST_JSON"; do
  [ -f "$f" ] || { echo "error: $f not found; see data/README.md (PASCAL VOC) or set VOC_ROOT." >&2; exit 1; }
done
[ -d "$IMAGES" ] || { echo "error: $IMAGES not found; see data/README.md (PASCAL VOC)." >&2; exit 1; }
ntt_args_from_env  # CONFIGS, TRAINER_ARGS, EXTRA_TEST_ARGS

for SHOT in "${SHOT_LIST[@]}"; do
  RESULTS_DIR=$RESULTS_ROOT/${SHOT}shot
  PKL=$RESULTS_DIR/${CLASS_SPLIT}_${SHOT}shot_seed${SEED}.pkl
  mkdir -p "$RESULTS_DIR"
  echo "==> [$CLASS_SPLIT, ${SHOT}-shot, seed $SEED] results in $RESULTS_DIR"
  PLOT_ARGS=()
  [ "$PLOT" = "1" ] && PLOT_ARGS=(--plot --img-dir "$IMAGES")

  ntt_sample "$SHOT" "$PKL" "$SEED" "$CLASS_SPLIT" "$TRAIN_JSON" ${PLOT_ARGS[@]+"${PLOT_ARGS[@]}"}
  ntt_common_args "$CLASS_SPLIT" "$SHOT" "$CATEGORY_NUM" "$RESULTS_DIR"
  ntt_fill "$RESULTS_DIR/memory.ckpt" "$IMAGES" "$TRAIN_JSON" "$PKL" "$SHOT" "class_split=$CLASS_SPLIT" "$GPUS"
  ntt_postprocess "$RESULTS_DIR/memory.ckpt" "$RESULTS_DIR/memory_postprocessed.ckpt"
  ntt_test "$RESULTS_DIR/memory_postprocessed.ckpt" "$IMAGES" "$TEST_JSON" "class_split=$CLASS_SPLIT" \
    "$RESULTS_DIR" "$GPUS" ${EXTRA_TEST_ARGS[@]+"${EXTRA_TEST_ARGS[@]}"}
done
