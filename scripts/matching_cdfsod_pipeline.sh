#!/usr/bin/env bash
# Full pipeline on one CD-FSOD (or any custom COCO-format) dataset:
#   1. box -> mask with SAM / SAM2 for {SHOT}_shot.json and test.json  (-> *_with_segm.json)
#   2. reference pickle from {SHOT}_shot_with_segm.json                  (coco_to_pkl.py)
#   3. fill_memory (1 device)   4. postprocess_memory (1 device)   5. test (all DEVICES)
#
# Usage (from the repository root):
#   bash scripts/matching_cdfsod_pipeline.sh DATASET_NAME SHOT DEVICES CAT_NAMES CATEGORY_NUM [DATASET_PATH]
#   e.g. bash scripts/matching_cdfsod_pipeline.sh NEU-DET 1 0,1 \
#          crazing,inclusion,patches,pitted_surface,rolled-in_scale,scratches 6
#
#   DEVICES       GPU ids, comma-separated ("0" or "0,1"; exported as CUDA_VISIBLE_DEVICES), or "cpu"
#   CAT_NAMES     comma-separated class names exactly as in the json's categories
#   CATEGORY_NUM  number of names in CAT_NAMES
#   DATASET_PATH  default: $CDFSOD_ROOT/DATASET_NAME, holding train/ test/ annotations/{1,5,10}_shot.json
#                 and annotations/test.json (see data/README.md)
#
# Environment (all optional):
#   CDFSOD_ROOT     folder of the CD-FSOD datasets (default ./data/cd-fsod)
#   PYTHON          interpreter (default: python, else python3)
#   YAML_PATH       main config (default no_time_to_train/pl_configs/matching_cdfsod_template.yaml)
#   EXTRA_CONFIG    a second --config applied on top of YAML_PATH (e.g. smaller models or a CPU trainer)
#   CKPT_DIR        memory files (default ./tmp_ckpts/cd_fsod/matching)
#   WORK_DIR        logs, results json and test log (default ./work_dirs/cd_fsod)
#   SAM_CHECKPOINT  box->mask model (default ./checkpoints/sam_vit_h_4b8939.pth; a SAM2 .pt works too)
#   SAM_MODEL_TYPE  auto (default), vit_h/vit_l/vit_b or a SAM2 config such as sam2_hiera_l.yaml
#   SAM_DEVICE      device of the box->mask step (default: cuda if available, else cpu)
#   SAM_BATCH_SIZE  images per SAM call (default 8)
#   SKIP_SEGM       unset/auto: make only the *_with_segm.json files that are missing;
#                   1: never run SAM (the *_with_segm.json files must exist); 0: always re-run SAM
#   TEST_ARGS       extra arguments for the test step, e.g.
#                   "--model.init_args.model_cfg.test.online_vis True --model.init_args.model_cfg.test.vis_thr 0.4"
set -euo pipefail

usage() {
  sed -n '7,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ "$#" -ge 5 ] && [ "$#" -le 6 ] || usage

DATASET_NAME=$1
SHOT=$2
DEVICES=$3
CAT_NAMES=$4
CATEGORY_NUM=$5
CDFSOD_ROOT=${CDFSOD_ROOT:-./data/cd-fsod}
DATASET_PATH=${6:-$CDFSOD_ROOT/$DATASET_NAME}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/steps.sh
. "$REPO_ROOT/scripts/lib/steps.sh"
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
YAML_PATH=${YAML_PATH:-$REPO_ROOT/no_time_to_train/pl_configs/matching_cdfsod_template.yaml}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
CKPT_DIR=${CKPT_DIR:-./tmp_ckpts/cd_fsod/matching}
WORK_DIR=${WORK_DIR:-./work_dirs/cd_fsod}
SAM_CHECKPOINT=${SAM_CHECKPOINT:-./checkpoints/sam_vit_h_4b8939.pth}
SAM_MODEL_TYPE=${SAM_MODEL_TYPE:-auto}
SAM_DEVICE=${SAM_DEVICE:-}
SAM_BATCH_SIZE=${SAM_BATCH_SIZE:-8}
SKIP_SEGM=${SKIP_SEGM:-auto}
TEST_ARGS=${TEST_ARGS:-}

fail() {
  echo "error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- arguments and layout
[[ "$SHOT" =~ ^[1-9][0-9]*$ ]] || fail "SHOT must be a positive integer (got '$SHOT')."
[[ "$CATEGORY_NUM" =~ ^[1-9][0-9]*$ ]] || fail "CATEGORY_NUM must be a positive integer (got '$CATEGORY_NUM')."
IFS=',' read -r -a CAT_LIST <<< "$CAT_NAMES"
[ "${#CAT_LIST[@]}" -eq "$CATEGORY_NUM" ] ||
  fail "CAT_NAMES lists ${#CAT_LIST[@]} class(es) but CATEGORY_NUM is $CATEGORY_NUM; they must agree."
case "$SKIP_SEGM" in auto | 0 | 1) ;; *) fail "SKIP_SEGM must be auto, 0 or 1 (got '$SKIP_SEGM')." ;; esac

if [ "$DEVICES" = "cpu" ]; then
  NUM_DEVICES=1
  TRAINER_ARGS=(--trainer.accelerator cpu)
else
  [[ "$DEVICES" =~ ^[0-9]+(,[0-9]+)*$ ]] || fail "DEVICES must be GPU ids like 0 or 0,1 (or cpu), got '$DEVICES'."
  IFS=',' read -r -a DEVICE_LIST <<< "$DEVICES"
  NUM_DEVICES=${#DEVICE_LIST[@]}
  TRAINER_ARGS=()
  export CUDA_VISIBLE_DEVICES=$DEVICES
fi

ANN_DIR=$DATASET_PATH/annotations
[ -d "$DATASET_PATH" ] || fail "dataset folder not found: $DATASET_PATH (set CDFSOD_ROOT or pass DATASET_PATH; see data/README.md)."
for sub in train test; do
  [ -d "$DATASET_PATH/$sub" ] || fail "$DATASET_PATH/$sub not found (expected train/ test/ annotations/)."
done
SHOT_JSON=$ANN_DIR/${SHOT}_shot.json
TEST_JSON_RAW=$ANN_DIR/test.json
SHOT_JSON_SEGM=$ANN_DIR/${SHOT}_shot_with_segm.json
TEST_JSON=$ANN_DIR/test_with_segm.json
SHOT_PKL=$ANN_DIR/${SHOT}_shot_with_segm.pkl

CONFIGS=(--config "$YAML_PATH")
if [ -n "$EXTRA_CONFIG" ]; then
  [ -f "$EXTRA_CONFIG" ] || fail "EXTRA_CONFIG file not found: $EXTRA_CONFIG"
  CONFIGS+=(--config "$EXTRA_CONFIG")
fi
MEMORY=$CKPT_DIR/${DATASET_NAME}_${SHOT}_refs_memory.pth
MEMORY_POST=$CKPT_DIR/${DATASET_NAME}_${SHOT}_refs_memory_postprocessed.pth
RESULTS_DIR=$WORK_DIR/$DATASET_NAME/${SHOT}shot
mkdir -p "$CKPT_DIR" "$RESULTS_DIR"
ntt_common_args "$DATASET_NAME" "$SHOT" "$CATEGORY_NUM" "$RESULTS_DIR"

step() { echo "==> [$DATASET_NAME, ${SHOT}-shot] $*"; }

# ---------------------------------------------------------------- 1. box -> mask
segment() {  # segment INPUT_JSON OUTPUT_JSON IMAGE_DIR [--visualize]
  local input=$1 output=$2 images=$3
  shift 3
  if [ "$SKIP_SEGM" = "1" ] || { [ "$SKIP_SEGM" = "auto" ] && [ -f "$output" ]; }; then
    [ -f "$output" ] || fail "SKIP_SEGM=1 but $output does not exist; run without SKIP_SEGM to create it."
    step "box->mask: using existing $output"
    return
  fi
  [ -f "$input" ] || fail "annotation file not found: $input"
  step "box->mask: $input"
  local device_args=()
  [ -n "$SAM_DEVICE" ] && device_args=(--device "$SAM_DEVICE")
  "$PYTHON" "$REPO_ROOT/no_time_to_train/dataset/sam_bbox_to_segm_batch.py" \
    --input_json "$input" \
    --image_dir "$images" \
    --sam_checkpoint "$SAM_CHECKPOINT" \
    --model_type "$SAM_MODEL_TYPE" \
    --batch_size "$SAM_BATCH_SIZE" \
    --output_json "$output" \
    ${device_args[@]+"${device_args[@]}"} "$@"
}
segment "$SHOT_JSON" "$SHOT_JSON_SEGM" "$DATASET_PATH/train" --visualize
segment "$TEST_JSON_RAW" "$TEST_JSON" "$DATASET_PATH/test"

# ---------------------------------------------------------------- 2. reference pickle
step "reference pickle: $SHOT_PKL"
"$PYTHON" "$REPO_ROOT/no_time_to_train/dataset/coco_to_pkl.py" "$SHOT_JSON_SEGM" "$SHOT_PKL" "$SHOT"

# ---------------------------------------------------------------- 3. fill memory
step "fill_memory -> $MEMORY"
ntt_fill "$MEMORY" "$DATASET_PATH/train" "$SHOT_JSON_SEGM" "$SHOT_PKL" "$SHOT" "cat_names=$CAT_NAMES" 1

# ---------------------------------------------------------------- 4. postprocess memory
step "postprocess_memory -> $MEMORY_POST"
ntt_postprocess "$MEMORY" "$MEMORY_POST"

# ---------------------------------------------------------------- 5. test
step "test on $TEST_JSON ($NUM_DEVICES device(s)); log: $RESULTS_DIR/test.log"
read -r -a EXTRA_TEST_ARGS <<< "$TEST_ARGS"
ntt_test "$MEMORY_POST" "$DATASET_PATH/test" "$TEST_JSON" "cat_names=$CAT_NAMES" "$RESULTS_DIR" "$NUM_DEVICES" \
  ${EXTRA_TEST_ARGS[@]+"${EXTRA_TEST_ARGS[@]}"}
step "done: results in $RESULTS_DIR"
