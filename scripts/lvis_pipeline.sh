#!/usr/bin/env bash
# LVIS v1: K-shot reference sampling from lvis_v1_train.json (seed 42; rare classes with fewer than K
# instances are padded by repetition), fill_memory, postprocess_memory, test on lvis_v1_val.json
# (lvis_minival* splits: lvis_v1_minival.json).
#
# Usage (from the repository root):
#   bash scripts/lvis_pipeline.sh SPLIT SHOTS [GPUS]
#     SPLIT  lvis (1203 classes), lvis_common (461), lvis_frequent (405), lvis_rare (337),
#            or lvis_minival[_common|_frequent|_rare]
#     SHOTS  one or more shot counts, e.g. 10 or "1 5 10" (or 1,5,10)
#     GPUS   number of devices (default 1)
#
# Results: work_dirs/lvis/{SPLIT}_seed42/{K}shot/. Data layout: data/README.md (data/lvis/*.json and
# COCO 2017 train + val images in data/coco/allimages). LVIS jsons name images only by coco_url; a
# copy with file_name added (*_with_file_names.json, next to the original) is written once.
# Environment (optional): SEED (42), LVIS_ROOT (./data/lvis), IMAGES (./data/coco/allimages),
# TEST_JSON, WORK_DIR (./work_dirs/lvis), CATEGORY_NUM (classes of the split in your json; default: LVIS v1's),
# PYTHON, YAML_PATH, EXTRA_CONFIG, TEST_ARGS, ACCELERATOR.
set -euo pipefail

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
  sed -n '6,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
SPLIT=$1
read -r -a SHOT_LIST <<< "${2//,/ }"
GPUS=${3:-1}
case "$SPLIT" in
  lvis | lvis_minival) SPLIT_SIZE=1203 ;;
  lvis_common | lvis_minival_common) SPLIT_SIZE=461 ;;
  lvis_frequent | lvis_minival_frequent) SPLIT_SIZE=405 ;;
  lvis_rare | lvis_minival_rare) SPLIT_SIZE=337 ;;
  *) echo "error: unknown LVIS split '$SPLIT'." >&2; exit 2 ;;
esac
CATEGORY_NUM=${CATEGORY_NUM:-$SPLIT_SIZE}  # the LVIS v1 class count; override for other LVIS-format jsons
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "error: GPUS must be a positive number (got '$GPUS')." >&2; exit 2; }
for shot in "${SHOT_LIST[@]}"; do
  [[ "$shot" =~ ^[1-9][0-9]*$ ]] || { echo "error: SHOTS must be positive integers (got '$2')." >&2; exit 2; }
done

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/steps.sh
. "$REPO_ROOT/scripts/lib/steps.sh"
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
YAML_PATH=${YAML_PATH:-$REPO_ROOT/no_time_to_train/pl_configs/matching_lvis_allClass.yaml}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
SEED=${SEED:-42}
LVIS_ROOT=${LVIS_ROOT:-./data/lvis}
IMAGES=${IMAGES:-./data/coco/allimages}
TRAIN_JSON_RAW=$LVIS_ROOT/lvis_v1_train.json
if [[ "$SPLIT" == lvis_minival* ]]; then
  TEST_JSON_RAW=${TEST_JSON:-$LVIS_ROOT/lvis_v1_minival.json}
else
  TEST_JSON_RAW=${TEST_JSON:-$LVIS_ROOT/lvis_v1_val.json}
fi
RESULTS_ROOT=${WORK_DIR:-./work_dirs/lvis}/${SPLIT}_seed${SEED}
ntt_args_from_env  # CONFIGS, TRAINER_ARGS, EXTRA_TEST_ARGS

for f in "$TRAIN_JSON_RAW" "$TEST_JSON_RAW"; do
  [ -f "$f" ] || { echo "error: $f not found; see data/README.md (LVIS) or set LVIS_ROOT / TEST_JSON." >&2; exit 1; }
done
[ -d "$IMAGES" ] || { echo "error: $IMAGES not found; see data/README.md (LVIS)." >&2; exit 1; }

# LVIS v1 images carry coco_url but no file_name, which the datasets read: add it once.
with_file_names() {  # with_file_names IN.json -> prints the json to use
  local in=$1 out=${1%.json}_with_file_names.json
  if [ -f "$out" ]; then echo "$out"; return; fi
  PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$in" "$out" >&2 <<'PY'
import json, os, sys
from no_time_to_train.io_utils import atomic_save_json
src, dst = sys.argv[1:3]
with open(src) as f:
    data = json.load(f)
missing = [img for img in data["images"] if "file_name" not in img]
for img in missing:
    img["file_name"] = os.path.basename(img["coco_url"])
atomic_save_json(data, dst)
print(f"{dst}: file_name added to {len(missing)} of {len(data['images'])} images")
PY
  echo "$out"
}
TRAIN_JSON=$(with_file_names "$TRAIN_JSON_RAW")
TEST_JSON=$(with_file_names "$TEST_JSON_RAW")

for SHOT in "${SHOT_LIST[@]}"; do
  RESULTS_DIR=$RESULTS_ROOT/${SHOT}shot
  PKL=$RESULTS_DIR/${SPLIT}_${SHOT}shot_seed${SEED}.pkl
  mkdir -p "$RESULTS_DIR"
  echo "==> [$SPLIT ($CATEGORY_NUM classes), ${SHOT}-shot, seed $SEED] results in $RESULTS_DIR"
  ntt_sample "$SHOT" "$PKL" "$SEED" "$SPLIT" "$TRAIN_JSON"
  ntt_common_args "$SPLIT" "$SHOT" "$CATEGORY_NUM" "$RESULTS_DIR"
  ntt_fill "$RESULTS_DIR/memory.ckpt" "$IMAGES" "$TRAIN_JSON" "$PKL" "$SHOT" "class_split=$SPLIT" "$GPUS"
  ntt_postprocess "$RESULTS_DIR/memory.ckpt" "$RESULTS_DIR/memory_postprocessed.ckpt"
  ntt_test "$RESULTS_DIR/memory_postprocessed.ckpt" "$IMAGES" "$TEST_JSON" "class_split=$SPLIT" \
    "$RESULTS_DIR" "$GPUS" ${EXTRA_TEST_ARGS[@]+"${EXTRA_TEST_ARGS[@]}"}
done
