#!/usr/bin/env bash
# CD-FSOD benchmark: DIOR (remote sensing, 20 classes) and FISH (DeepFish, 1 class).
#
# Usage (from the repository root):
#   bash scripts/dior_fish.sh [DEVICES]          DEVICES: GPU ids such as 0 or 0,1 (default 0), or cpu
# Environment: SHOTS (default "1 5 10"), DATASETS (default "DIOR FISH"), plus everything that
# scripts/matching_cdfsod_pipeline.sh reads (CDFSOD_ROOT, SAM_CHECKPOINT, EXTRA_CONFIG, ...).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEVICES=${1:-0}
read -r -a SHOT_LIST <<< "${SHOTS:-1 5 10}"
read -r -a DATASET_LIST <<< "${DATASETS:-DIOR FISH}"

declare -A CAT_NAMES=(
  [DIOR]="Expressway-Service-area,Expressway-toll-station,airplane,airport,baseballfield,basketballcourt,bridge,chimney,dam,golffield,groundtrackfield,harbor,overpass,ship,stadium,storagetank,tenniscourt,trainstation,vehicle,windmill"
  [FISH]="fish"
)

for dataset in "${DATASET_LIST[@]}"; do
  [ -n "${CAT_NAMES[$dataset]+x}" ] || { echo "error: unknown dataset '$dataset' (known: ${!CAT_NAMES[*]})" >&2; exit 2; }
  names=${CAT_NAMES[$dataset]}
  IFS=',' read -r -a classes <<< "$names"
  for shot in "${SHOT_LIST[@]}"; do
    bash "$SCRIPT_DIR/matching_cdfsod_pipeline.sh" "$dataset" "$shot" "$DEVICES" "$names" "${#classes[@]}"
  done
done
