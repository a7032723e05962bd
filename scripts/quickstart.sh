#!/usr/bin/env bash
# Quick start: install, generate a small example dataset, and run fill -> postprocess -> test.
#
# Uses real checkpoints when they are in checkpoints/ (SAM2-L + DINOv2-L, else SAM2-t + DINOv2-S).
# Without them it downloads the small official pair (SAM2 Hiera-T + DINOv2 ViT-S/14, ~240 MB;
# NTT_OFFLINE=1 skips that, NTT_CHECKPOINT_MIRROR=URL fetches from a mirror); offline it writes
# RANDOM-WEIGHT stand-ins to checkpoints/random/ and says so loudly: such a run checks that
# everything works, its AP is meaningless.
#
# Re-running reuses each finished step whose inputs (files, checkpoints, settings) are unchanged
# and says so; FORCE=1 recomputes everything. Each step logs to $OUT/lightning_logs/<step>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1

DATA=data/demo
OUT=work_dirs/demo
CLASSES=person,car,bird
mkdir -p "$OUT"
if [ ! -f "$DATA/annotations/instances_val2017.json" ]; then
  python -m no_time_to_train.data.synthetic --out-dir "$DATA" --classes "$CLASSES" \
      --n-train 8 --n-val 4 --n-shot 2 --seed 0
fi

BASE=no_time_to_train/pl_configs/matching_cdfsod_template.yaml
CONFIGS=(--config "$BASE")
CKPTS=(checkpoints/sam2_hiera_large.pt checkpoints/dinov2/dinov2_vitl14_pretrain.pth)
if [ -f checkpoints/sam2_hiera_large.pt ] && [ -f checkpoints/dinov2/dinov2_vitl14_pretrain.pth ]; then
  echo "[quickstart] using checkpoints/sam2_hiera_large.pt + checkpoints/dinov2/dinov2_vitl14_pretrain.pth"
elif { [ -f checkpoints/sam2_hiera_tiny.pt ] && [ -f checkpoints/dinov2/dinov2_vits14_pretrain.pth ]; } ||
     { [ -z "${NTT_OFFLINE:-}" ] && python -m no_time_to_train.checkpoints.fetch small --dest checkpoints \
         --timeout "${NTT_FETCH_TIMEOUT:-10}" > /dev/null; }; then
  echo "[quickstart] using checkpoints/sam2_hiera_tiny.pt + checkpoints/dinov2/dinov2_vits14_pretrain.pth"
  CONFIGS+=(--config no_time_to_train/pl_configs/demo_tiny.yaml)
  CKPTS=(checkpoints/sam2_hiera_tiny.pt checkpoints/dinov2/dinov2_vits14_pretrain.pth)
else
  RND=checkpoints/random
  if [ ! -f "$RND/sam2_hiera_tiny.pt" ] || [ ! -f "$RND/dinov2/dinov2_vits14_pretrain.pth" ]; then
    python -m no_time_to_train.tools.random_checkpoints --random-weights --small --no-large --dest "$RND" --force
  fi
  echo "=================================================================================="
  echo " No real checkpoints in checkpoints/ and none could be downloaded (see checkpoints/README.md)."
  echo " SMOKE RUN WITH RANDOM WEIGHTS: every step runs for real, but the AP is meaningless."
  echo "=================================================================================="
  CONFIGS+=(--config no_time_to_train/pl_configs/demo_tiny.yaml
            --model.init_args.model_cfg.sam2_ckpt_path "$RND/sam2_hiera_tiny.pt"
            --model.init_args.model_cfg.encoder_ckpt_path "$RND/dinov2/dinov2_vits14_pretrain.pth")
fi

COMMON=("${CONFIGS[@]}"
  --model.init_args.model_cfg.dataset_name demo
  --model.init_args.model_cfg.memory_bank_cfg.length 2
  --model.init_args.model_cfg.memory_bank_cfg.category_num 3
  --trainer.logger.save_dir "$OUT"
  --trainer.devices 1)

# step NAME OUTPUT ARGS...: run `python run_lightening.py test ARGS...` unless OUTPUT exists and
# was made by the same ARGS from the same inputs (size and modification time of every file named
# in ARGS and of the checkpoints in use). The record is $OUT/.steps/NAME.
step() {
  local name=$1 output=$2 stamp="$OUT/.steps/$1" now
  shift 2
  now=$(python -m no_time_to_train.tools.step_stamp --exclude "$output" -- "${CKPTS[@]}" "$@")
  if [ -z "${FORCE:-}" ] && [ -f "$output" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$now" ]; then
    echo "[quickstart] $name: reusing $output (its inputs are unchanged; FORCE=1 recomputes)"
    return
  fi
  mkdir -p "$OUT/.steps"
  rm -f "$stamp"
  python run_lightening.py test "$@" --trainer.logger.version "$name"
  echo "$now" > "$stamp"
}

step fill_memory "$OUT/memory.ckpt" "${COMMON[@]}" --model.test_mode fill_memory --out_path "$OUT/memory.ckpt" \
  --model.init_args.dataset_cfgs.fill_memory.root "$DATA/train2017" \
  --model.init_args.dataset_cfgs.fill_memory.json_file "$DATA/annotations/instances_train2017.json" \
  --model.init_args.dataset_cfgs.fill_memory.memory_pkl "$DATA/annotations/references_2shot.pkl" \
  --model.init_args.dataset_cfgs.fill_memory.memory_length 2 \
  --model.init_args.dataset_cfgs.fill_memory.cat_names "$CLASSES"

step postprocess_memory "$OUT/memory_postprocessed.ckpt" "${COMMON[@]}" --model.test_mode postprocess_memory \
  --ckpt_path "$OUT/memory.ckpt" --out_path "$OUT/memory_postprocessed.ckpt"

step test "$OUT/results.json" "${COMMON[@]}" --model.test_mode test \
  --ckpt_path "$OUT/memory_postprocessed.ckpt" --export_result "$OUT/results.json" \
  --model.init_args.dataset_cfgs.test.root "$DATA/val2017" \
  --model.init_args.dataset_cfgs.test.json_file "$DATA/annotations/instances_val2017.json" \
  --model.init_args.dataset_cfgs.test.cat_names "$CLASSES" \
  --model.init_args.model_cfg.test.online_vis True --model.init_args.model_cfg.test.vis_thr 0.4

echo "[quickstart] done: memory files and results.json in $OUT, pictures in results_analysis/demo/"
