#!/usr/bin/env bash
# CD-FSOD benchmark: ArTaxOr (arthropod photos, 7 classes) and clipart1k (VOC classes as clip art, 20).
#
# Usage (from the repository root):
#   bash scripts/artaxor_clipart.sh [DEVICES]    DEVICES: GPU ids such as 0 or 0,1 (default 0), or cpu
# Environment: SHOTS (default "1 5 10"), DATASETS (default "ArTaxOr clipart1k"), plus everything that
# scripts/matching_cdfsod_pipeline.sh reads (CDFSOD_ROOT, SAM_CHECKPOINT, EXTRA_CONFIG, ...).
set -euo pipefail
# shellcheck source=lib/steps.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/steps.sh"

declare -A CAT_NAMES=(
  [ArTaxOr]="Araneae,Coleoptera,Diptera,Hemiptera,Hymenoptera,Lepidoptera,Odonata"
  [clipart1k]="sheep,chair,boat,bottle,diningtable,sofa,cow,motorbike,car,aeroplane,cat,train,person,bicycle,pottedplant,bird,dog,bus,tvmonitor,horse"
)

ntt_cdfsod_datasets CAT_NAMES "ArTaxOr clipart1k" "${1:-0}"  # DEVICES (default 0)
