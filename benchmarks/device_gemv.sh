#!/usr/bin/env bash
# One device call for the M = 1 GEMV kernel: its GPU tests (block dot, M = 1 GEMMs), its tile sweep
# against cuBLAS bf16, the tile kernel and (BASELINES="--baseline path/to/gemv.py ...") another GEMV version, then
# bench_gemm's small-M rows (both models).
# Usage on the GPU machine (repo root):  bash benchmarks/device_gemv.sh   (results under $OUT)
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
NVFP4_TEST_ON_GPU=1 timeout ${TESTS_S:-200} python3 -m pytest -q -p no:cacheprovider -x tests/test_triton_backend.py \
    -k "${TESTS_K:-block_dot or vector}" > "$OUT/gpu_tests_gemv.txt" 2>&1
tail -n 3 "$OUT/gpu_tests_gemv.txt"
timeout 240 python3 benchmarks/sweep_gemv.py --json "$OUT/sweep_gemv.json" ${BASELINES:-} \
    > "$OUT/sweep_gemv.txt" 2>&1
tail -n 12 "$OUT/sweep_gemv.txt"
if [ -z "${SKIP_BENCH:-}" ]; then
  timeout 200 python3 benchmarks/bench_gemm.py --small-only --json "$OUT/gemm_small.json" > "$OUT/gemm_small.txt" 2>&1
  tail -n 22 "$OUT/gemm_small.txt"
fi
