# Steps shared by the pipelines in scripts/ (sourced by them, not run; defines functions only).
#
# The three memory steps run
#   $PYTHON $REPO_ROOT/run_lightening.py test "${CONFIGS[@]}" --model.test_mode MODE <step arguments> \
#     "${COMMON_ARGS[@]}" "${TRAINER_ARGS[@]}" --trainer.devices N
# so the pipeline sets, before its first step:
#   PYTHON, REPO_ROOT  the interpreter and the repository root
#   CONFIGS            --config FILE [--config FILE ...]          (ntt_args_from_env sets it)
#   TRAINER_ARGS       trainer overrides for every step, may be empty, e.g. (--trainer.accelerator cpu)
#   COMMON_ARGS        per run: dataset name, memory size, log folder (ntt_common_args sets it)
# CLASSES selects the classes of fill_memory and test: class_split=SPLIT (a split this package
# knows, e.g. pascal_voc_split_1) or cat_names=A,B,C (names of the json's categories).

# ntt_args_from_env: CONFIGS from YAML_PATH (+ EXTRA_CONFIG), TRAINER_ARGS from ACCELERATOR and
# EXTRA_TEST_ARGS from TEST_ARGS (split on spaces).
ntt_args_from_env() {
  read -r -a EXTRA_TEST_ARGS <<< "${TEST_ARGS:-}"
  CONFIGS=(--config "$YAML_PATH")
  [ -z "${EXTRA_CONFIG:-}" ] || CONFIGS+=(--config "$EXTRA_CONFIG")
  TRAINER_ARGS=()
  [ -z "${ACCELERATOR:-}" ] || TRAINER_ARGS=(--trainer.accelerator "$ACCELERATOR")
}

# ntt_common_args DATASET_NAME SHOT CATEGORY_NUM LOG_DIR: sets COMMON_ARGS for the steps of one run.
ntt_common_args() {
  COMMON_ARGS=(
    --model.init_args.model_cfg.dataset_name "$1"
    --model.init_args.model_cfg.memory_bank_cfg.length "$2"
    --model.init_args.model_cfg.memory_bank_cfg.category_num "$3"
    --trainer.logger.save_dir "$4"
  )
}

# ntt_sample SHOT OUT_PKL SEED DATASET JSON [ARG...]: K-shot reference sampling (few_shot_sampling.py).
ntt_sample() {
  "$PYTHON" "$REPO_ROOT/no_time_to_train/dataset/few_shot_sampling.py" \
    --n-shot "$1" --out-path "$2" --seed "$3" --dataset "$4" --json "$5" "${@:6}"
}

# _ntt_check_classes CLASSES: fails (status 2) unless CLASSES is class_split=... or cat_names=...
_ntt_check_classes() {
  case "$1" in
    class_split=* | cat_names=*) ;;
    *) echo "error: CLASSES must be class_split=SPLIT or cat_names=A,B,... (got '$1')." >&2; return 2 ;;
  esac
}

# _ntt_lightening MODE ARG...: run_lightening.py test with the pipeline's configs in test_mode MODE.
_ntt_lightening() {
  "$PYTHON" "$REPO_ROOT/run_lightening.py" test "${CONFIGS[@]}" --model.test_mode "$@"
}

# ntt_fill OUT_CKPT IMAGE_ROOT JSON PKL SHOT CLASSES DEVICES: fill_memory from the references in PKL.
ntt_fill() {
  local out=$1 root=$2 json=$3 pkl=$4 shot=$5 classes=$6 devices=$7
  _ntt_check_classes "$classes"
  _ntt_lightening fill_memory \
    --out_path "$out" \
    --model.init_args.dataset_cfgs.fill_memory.root "$root" \
    --model.init_args.dataset_cfgs.fill_memory.json_file "$json" \
    --model.init_args.dataset_cfgs.fill_memory.memory_pkl "$pkl" \
    --model.init_args.dataset_cfgs.fill_memory.memory_length "$shot" \
    --model.init_args.dataset_cfgs.fill_memory."${classes%%=*}" "${classes#*=}" \
    "${COMMON_ARGS[@]}" ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"} \
    --trainer.devices "$devices"
}

# ntt_postprocess IN_CKPT OUT_CKPT: postprocess_memory (always on one device).
ntt_postprocess() {
  _ntt_lightening postprocess_memory \
    --ckpt_path "$1" \
    --out_path "$2" \
    "${COMMON_ARGS[@]}" ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"} \
    --trainer.devices 1
}

# ntt_test [--no-imgs-path] CKPT IMAGE_ROOT JSON CLASSES RESULTS_DIR DEVICES [ARG...]
# Test with the postprocessed memory CKPT; writes RESULTS_DIR/results.json and RESULTS_DIR/test.log
# (stdout and stderr, also shown). IMAGE_ROOT is also model_cfg.test.imgs_path (the images online_vis
# draws on) unless --no-imgs-path, which leaves that to the config. ARGs go last, so they can override.
ntt_test() {
  local imgs_path=1
  if [ "$1" = "--no-imgs-path" ]; then
    imgs_path=0
    shift
  fi
  local ckpt=$1 root=$2 json=$3 classes=$4 results_dir=$5 devices=$6
  shift 6
  local vis_args=()
  _ntt_check_classes "$classes"
  [ "$imgs_path" = 0 ] || vis_args=(--model.init_args.model_cfg.test.imgs_path "$root")
  _ntt_lightening test \
    --ckpt_path "$ckpt" \
    ${vis_args[@]+"${vis_args[@]}"} \
    --model.init_args.dataset_cfgs.test.root "$root" \
    --model.init_args.dataset_cfgs.test.json_file "$json" \
    --model.init_args.dataset_cfgs.test."${classes%%=*}" "${classes#*=}" \
    --export_result "$results_dir/results.json" \
    "${COMMON_ARGS[@]}" ${TRAINER_ARGS[@]+"${TRAINER_ARGS[@]}"} \
    --trainer.devices "$devices" \
    "$@" 2>&1 | tee "$results_dir/test.log"
}

# ntt_cdfsod_datasets CAT_NAMES_ARRAY DEFAULT_DATASETS DEVICES
# scripts/matching_cdfsod_pipeline.sh for every dataset of $DATASETS (default DEFAULT_DATASETS) and
# every shot of $SHOTS (default "1 5 10"). CAT_NAMES_ARRAY is the name of an associative array:
# dataset -> comma-separated class names. An unknown dataset stops the loop with status 2.
ntt_cdfsod_datasets() {
  local -n cdfsod_cat_names=$1
  local devices=$3 pipeline dataset names shot
  local -a shot_list dataset_list classes
  pipeline=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/matching_cdfsod_pipeline.sh
  read -r -a shot_list <<< "${SHOTS:-1 5 10}"
  read -r -a dataset_list <<< "${DATASETS:-$2}"
  for dataset in "${dataset_list[@]}"; do
    [ -n "${cdfsod_cat_names[$dataset]+x}" ] ||
      { echo "error: unknown dataset '$dataset' (known: ${!cdfsod_cat_names[*]})" >&2; exit 2; }
    names=${cdfsod_cat_names[$dataset]}
    IFS=',' read -r -a classes <<< "$names"
    for shot in "${shot_list[@]}"; do
      bash "$pipeline" "$dataset" "$shot" "$devices" "$names" "${#classes[@]}"
    done
  done
}
