#!/usr/bin/env bash
# CD-FSOD benchmark: NEU-DET (steel surface defects, 6 classes) and UODD (underwater, 3 classes).
#
# Usage (from the repository root):
#   bash scripts/neu-det_uodd.sh [DEVICES]       DEVICES: GPU ids such as 0 or 0,1 (default 0), or cpu
# Environment: SHOTS (default "1 5 10"), DATASETS (default "NEU-DET UODD"), plus everything that
# scripts/matching_cdfsod_pipeline.sh reads (CDFSOD_ROOT, SAM_CHECKPOINT, EXTRA_CONFIG, ...).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEVICES=${1:-0}
read -r -a SHOT_LIST <<< "${SHOTS:-1 5 10}"
read -r -a DATASET_LIST <<< "${DATASETS:-NEU-DET UODD}"

declare -A CAT_NAMES=(
  [NEU-DET]="crazing,inclusion,patches,pitted_surface,rolled-in_scale,scratches"
  [UODD]="seacucumber,seaurchin,scallop"
)

for dataset in "${DATASET_LIST[@]}"; do
  [ -n "${CAT_NAMES[$dataset]+x}" ] || { echo "error: unknown dataset '$dataset' (known: ${!CAT_NAMES[*]})" >&2; exit 2; }
  names=${CAT_NAMES[$dataset]}
  IFS=',' read -r -a classes <<< "$names"
  for shot in "${SHOT_LIST[@]}"; do
    bash "$SCRIPT_DIR/matching_cdfsod_pipeline.sh" "$dataset" "$shot" "$DEVICES" "$names" "${#classes[@]}"
  done
done
