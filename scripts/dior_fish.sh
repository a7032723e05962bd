#!/usr/bin/env bash
# CD-FSOD benchmark: DIOR (remote sensing, 20 classes) and FISH (DeepFish, 1 class).
#
# Usage (from the repository root):
#   bash scripts/dior_fish.sh [DEVICES]          DEVICES: GPU ids such as 0 or 0,1 (default 0), or cpu
# Environment: SHOTS (default "1 5 10"), DATASETS (default "DIOR FISH"), plus everything that
# scripts/matching_cdfsod_pipeline.sh reads (CDFSOD_ROOT, SAM_CHECKPOINT, EXTRA_CONFIG, ...).
set -euo pipefail
# shellcheck source=lib/steps.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/steps.sh"

declare -A CAT_NAMES=(
  [DIOR]="Expressway-Service-area,Expressway-toll-station,airplane,airport,baseballfield,basketballcourt,bridge,chimney,dam,golffield,groundtrackfield,harbor,overpass,ship,stadium,storagetank,tenniscourt,trainstation,vehicle,windmill"
  [FISH]="fish"
)

ntt_cdfsod_datasets CAT_NAMES "DIOR FISH" "${1:-0}"  # DEVICES (default 0)
