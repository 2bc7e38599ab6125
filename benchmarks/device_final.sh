#!/usr/bin/env bash
# The session's closing device checks, in two calls (PART=gemm, then PART=rest): the GPU tests of
# every kernel changed (quantize, GEMV, and the paths built on them), and the final quantize bench.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NVFP4_TEST_ON_GPU=1
if [ "${PART:-gemm}" = gemm ]; then
    timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k "gemm" \
        > "$OUT/gpu_tests_gemm.txt" 2>&1; tail -n 3 "$OUT/gpu_tests_gemm.txt"
    timeout 150 python3 benchmarks/bench_quantize.py --json "$OUT/quantize.json" > "$OUT/quantize.txt" 2>&1
    tail -n 9 "$OUT/quantize.txt"
else
    timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k "not gemm" \
        > "$OUT/gpu_tests_quantize.txt" 2>&1; tail -n 3 "$OUT/gpu_tests_quantize.txt"
    timeout 180 python3 -m pytest -q -p no:cacheprovider ${REST_TESTS:-tests/test_paged_attention_triton.py \
        tests/test_kv_cache_pass.py tests/test_training_recipe.py} > "$OUT/gpu_tests_rest.txt" 2>&1
    tail -n 3 "$OUT/gpu_tests_rest.txt"
fi
