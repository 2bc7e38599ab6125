#!/usr/bin/env bash
# One device call: the #6 quality run. Both arms train at once on the one GPU (two processes; the
# step times of this run are therefore not the speed measurement, see bench_training.py), each
# rewriting arm_<recipe>.json at every evaluation, so a time limit still leaves the curves.
# $AFTER_BF16 (a command) runs once the shorter bf16 arm is done, e.g. GPU tests.
# Usage on the GPU machine (repo root):  bash benchmarks/device_train.sh STEPS [extra train_video.py flags]
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
STEPS=${1:-3000}; shift || true
ARGS=(--device cuda --dim 256 --layers 4 --batch-size 16 --steps "$STEPS" --eval-every 100 --out "$OUT" "$@")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout 555 python3 examples/train_video.py --arms nvfp4 "${ARGS[@]}" > "$OUT/log_nvfp4.txt" 2>&1 &
timeout 400 python3 examples/train_video.py --arms bf16 "${ARGS[@]}" > "$OUT/log_bf16.txt" 2>&1
[ -n "${AFTER_BF16:-}" ] && timeout 330 bash -c "$AFTER_BF16" > "$OUT/after_bf16.txt" 2>&1
wait
for f in "$OUT"/log_*.txt; do echo "== $f"; tail -n 3 "$f"; done
python3 examples/train_video.py --combine --out "$OUT" 2>&1 | tail -n 3
