#!/usr/bin/env bash
# One device call: GPU tests of the Triton kernels, then every benchmark; logs and JSON into $OUT.
# Usage on the GPU machine (repo root):  bash benchmarks/device_run.sh [quick]
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
NVFP4_TEST_ON_GPU=1 python3 -m pytest -q -x -p no:cacheprovider tests/test_triton_backend.py -k "not compiled_tiny and not inline_a" 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
python3 benchmarks/bench_quantize.py --json "$OUT/quantize.json" 2>&1 | tee "$OUT/quantize.txt"
if [ "${1:-}" = quick ]; then
  python3 benchmarks/bench_gemm.py --models wan-1.3b --json "$OUT/gemm.json" 2>&1 | tee "$OUT/gemm.txt"
else
  python3 benchmarks/bench_gemm.py --json "$OUT/gemm.json" 2>&1 | tee "$OUT/gemm.txt"
fi
python3 benchmarks/bench_block.py --json "$OUT/block.json" 2>&1 | tail -12 | tee "$OUT/block.txt"
