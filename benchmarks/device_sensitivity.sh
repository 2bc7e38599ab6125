#!/usr/bin/env bash
# One device call (NVFP4 training, quality target): does keeping the most NVFP4-sensitive linears
# in bf16 close the validation-loss gap? Four arms train at once on the one GPU from the same seed:
# bf16, the NVFP4 recipe, and the recipe with $KEEP_A / $KEEP_B (globs) kept in bf16; then the
# leave-one-out sensitivity of the trained bf16 and NVFP4 weights (benchmarks/layer_sensitivity.py).
# Weights stay in $RUNS (~160 MB each at dim 512); everything else is packed into
# $OUT/sensitivity_runs.tgz at the end (the device tool returns only a few files per call).
# Usage (repo root, GPU machine):
#   STEPS=1500 bash benchmarks/device_sensitivity.sh
set -uo pipefail
OUT=${OUT:-out}; RUNS=${RUNS:-/tmp/sensitivity_runs}; REPORT=$RUNS/report; mkdir -p "$OUT" "$REPORT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
STEPS=${STEPS:-1500}
KEEP_A=${KEEP_A:-blocks.0.ffn.up}
KEEP_B=${KEEP_B:-blocks.0.*}
LIMIT=${LIMIT:-420}
source benchmarks/device_train_arms.sh
record_versions "$REPORT/gpu.txt"

arm "$RUNS/bf16" "$REPORT/log_bf16.txt" --arms bf16 &
arm "$RUNS/recipe" "$REPORT/log_recipe.txt" --arms nvfp4 &
arm "$RUNS/keep_a" "$REPORT/log_keep_a.txt" --arms nvfp4 --keep-bf16 "$KEEP_A" &
arm "$RUNS/keep_b" "$REPORT/log_keep_b.txt" --arms nvfp4 --keep-bf16 "$KEEP_B" &
wait
for name in recipe keep_a keep_b; do  # each NVFP4 arm against the one bf16 arm
  cp "$RUNS/bf16/arm_bf16.json" "$RUNS/$name/" && python3 examples/train_video.py --combine --out "$RUNS/$name" 2>&1 | tail -n 1
  cp "$RUNS/$name/summary.json" "$REPORT/summary_$name.json"; cp "$RUNS/$name/loss_curves.png" "$REPORT/loss_curves_$name.png"
done
cp "$RUNS/bf16/arm_bf16.json" "$REPORT/"
python3 benchmarks/layer_sensitivity.py "$RUNS/bf16" --device cuda --json "$REPORT/sensitivity_bf16.json" \
  --plot "$REPORT/sensitivity_bf16.png" 2>&1 | tail -n 30
python3 benchmarks/layer_sensitivity.py "$RUNS/recipe" --arm nvfp4 --device cuda --json "$REPORT/sensitivity_nvfp4.json" \
  --plot "$REPORT/sensitivity_nvfp4.png" 2>&1 | tail -n 30
tar czf "$OUT/sensitivity_runs.tgz" -C "$REPORT" .
