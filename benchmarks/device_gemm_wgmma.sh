#!/usr/bin/env bash
# One device call (about 3 minutes): the Gluon W4A4 GEMM for M <= 64 (gemm_wgmma.py, not routed).
# First its GPU tests (every GEMM case it takes against the reference backend, the next operand bit
# for bit, the workspace left zeroed), then, only if they pass, the A/B against the routed kernels
# and cuBLAS bf16 + epilogue at M = 16 and 64 (ab_gemm_wgmma.py). Results under $OUT: gpu.txt,
# gpu_tests.txt, ab_gemm_wgmma.json and log.txt.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
NVFP4_TEST_ON_GPU=1 timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k wgmma \
    > "$OUT/gpu_tests.txt" 2>&1; rc=$?; echo "tests rc $rc"; tail -n 5 "$OUT/gpu_tests.txt"
if [ $rc = 0 ]; then
  timeout 240 python3 benchmarks/ab_gemm_wgmma.py --json "$OUT/ab_gemm_wgmma.json" > /tmp/ab.txt 2>&1
  echo "ab rc $?"; grep -v "^{" /tmp/ab.txt | tee "$OUT/log.txt" | tail -n 45
fi
