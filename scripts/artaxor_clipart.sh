#!/usr/bin/env bash
# CD-FSOD benchmark: ArTaxOr (arthropod photos, 7 classes) and clipart1k (VOC classes as clip art, 20).
#
# Usage (from the repository root):
#   bash scripts/artaxor_clipart.sh [DEVICES]    DEVICES: GPU ids such as 0 or 0,1 (default 0), or cpu
# Environment: SHOTS (default "1 5 10"), DATASETS (default "ArTaxOr clipart1k"), plus everything that
# scripts/matching_cdfsod_pipeline.sh reads (CDFSOD_ROOT, SAM_CHECKPOINT, EXTRA_CONFIG, ...).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEVICES=${1:-0}
read -r -a SHOT_LIST <<< "${SHOTS:-1 5 10}"
read -r -a DATASET_LIST <<< "${DATASETS:-ArTaxOr clipart1k}"

declare -A CAT_NAMES=(
  [ArTaxOr]="Araneae,Coleoptera,Diptera,Hemiptera,Hymenoptera,Lepidoptera,Odonata"
  [clipart1k]="sheep,chair,boat,bottle,diningtable,sofa,cow,motorbike,car,aeroplane,cat,train,person,bicycle,pottedplant,bird,dog,bus,tvmonitor,horse"
)

for dataset in "${DATASET_LIST[@]}"; do
  [ -n "${CAT_NAMES[$dataset]+x}" ] || { echo "error: unknown dataset '$dataset' (known: ${!CAT_NAMES[*]})" >&2; exit 2; }
  names=${CAT_NAMES[$dataset]}
  IFS=',' read -r -a classes <<< "$names"
  for shot in "${SHOT_LIST[@]}"; do
    bash "$SCRIPT_DIR/matching_cdfsod_pipeline.sh" "$dataset" "$shot" "$DEVICES" "$names" "${#classes[@]}"
  done
done
