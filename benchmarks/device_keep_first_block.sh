#!/usr/bin/env bash
# One device call (NVFP4 training, quality target): the recipe with the first block kept in bf16
# (the DiT's most NVFP4-sensitive linears, benchmarks/layer_sensitivity.py) against the bf16 arm of
# the same seed, for each of $SEEDS, and the plain recipe for each of $RECIPE_SEEDS; all processes
# share the GPU. Curves and summaries (no weights) land in $OUT/keep_first_block_runs.tgz.
# Usage (repo root, GPU machine; an empty SEEDS or RECIPE_SEEDS runs none of that arm):
#   SEEDS="0 1" RECIPE_SEEDS=0 STEPS=3000 bash benchmarks/device_keep_first_block.sh
set -uo pipefail
OUT=${OUT:-out}; RUNS=${RUNS:-/tmp/keep_first_block_runs}; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
STEPS=${STEPS:-3000}; SEEDS=${SEEDS-0 1}; RECIPE_SEEDS=${RECIPE_SEEDS-0}
source benchmarks/device_train_arms.sh
COMMON+=(--eval-clips "${CLIPS:-128}")
record_versions "$RUNS/gpu.txt"
run() {  # run NAME SEED ARGS...: one arm into $RUNS/NAME
  local name=$1 seed=$2; shift 2
  arm "$RUNS/$name" "$RUNS/$name/log.txt" --seed "$seed" "$@"
}
for s in $SEEDS; do
  run "bf16_s$s" "$s" --arms bf16 &
  run "first_block_s$s" "$s" --arms nvfp4 --keep-first-blocks 1 &
done
for s in $RECIPE_SEEDS; do run "recipe_s$s" "$s" --arms nvfp4 & done
wait
for s in $(printf "%s\n" $SEEDS $RECIPE_SEEDS | sort -un); do  # each NVFP4 arm against its seed's bf16 arm
  for name in "first_block_s$s" "recipe_s$s"; do
    [ -f "$RUNS/$name/arm_nvfp4.json" ] && [ -f "$RUNS/bf16_s$s/arm_bf16.json" ] || continue
    cp "$RUNS/bf16_s$s/arm_bf16.json" "$RUNS/$name/"
    echo "$name: $(python3 examples/train_video.py --combine --out "$RUNS/$name" 2>&1 | tail -n 1)"
  done
done
tar czf "$OUT/keep_first_block_runs.tgz" --exclude='*.pt' -C "$RUNS" .
