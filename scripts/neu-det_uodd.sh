#!/usr/bin/env bash
# CD-FSOD benchmark: NEU-DET (steel surface defects, 6 classes) and UODD (underwater, 3 classes).
#
# Usage (from the repository root):
#   bash scripts/neu-det_uodd.sh [DEVICES]       DEVICES: GPU ids such as 0 or 0,1 (default 0), or cpu
# Environment: SHOTS (default "1 5 10"), DATASETS (default "NEU-DET UODD"), plus everything that
# scripts/matching_cdfsod_pipeline.sh reads (CDFSOD_ROOT, SAM_CHECKPOINT, EXTRA_CONFIG, ...).
set -euo pipefail
# shellcheck source=lib/steps.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/steps.sh"

declare -A CAT_NAMES=(
  [NEU-DET]="crazing,inclusion,patches,pitted_surface,rolled-in_scale,scratches"
  [UODD]="seacucumber,seaurchin,scallop"
)

ntt_cdfsod_datasets CAT_NAMES "NEU-DET UODD" "${1:-0}"  # DEVICES (default 0)
