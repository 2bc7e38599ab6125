#!/usr/bin/env bash
# One device call: GPU tests of the paged attention kernel, then bench_attention and bench_training.
# Usage on the GPU machine (repo root):  bash benchmarks/device_kernels.sh
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
NVFP4_TEST_ON_GPU=1 timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_triton.py > "$OUT/gpu_tests.txt" 2>&1
tail -n 3 "$OUT/gpu_tests.txt"
timeout 150 python3 benchmarks/bench_attention.py --json "$OUT/attention.json" > "$OUT/attention.txt" 2>&1
tail -n 16 "$OUT/attention.txt"
timeout 250 python3 benchmarks/bench_training.py --json "$OUT/training.json" > "$OUT/training.txt" 2>&1
tail -n 12 "$OUT/training.txt"
