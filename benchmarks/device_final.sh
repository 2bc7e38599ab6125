#!/usr/bin/env bash
# The session's closing device checks, in two calls (PART=gemm, then PART=rest): the GPU tests of
# every kernel changed and of the paths built on them, and the final benchmarks.
#   PART=gemm: GEMM/GEMV GPU tests, bench_gemm (GEMM_ARGS, default its small-M rows), the block
#              forward of each of BLOCK_MODELS (default wan-1.3b)
#   PART=rest: REST_TESTS (attention, KV cache, training); QUANTIZE=1 adds the quantize tests
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NVFP4_TEST_ON_GPU=1
if [ "${PART:-gemm}" = gemm ]; then
    timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k "gemm or gemv or block_dot" \
        > "$OUT/gpu_tests_gemm.txt" 2>&1; tail -n 3 "$OUT/gpu_tests_gemm.txt"
    timeout ${GEMM_S:-150} python3 benchmarks/bench_gemm.py ${GEMM_ARGS:---small-only} --json "$OUT/gemm.json" \
        > "$OUT/gemm.txt" 2>&1; tail -n 30 "$OUT/gemm.txt"
    for model in ${BLOCK_MODELS:-wan-1.3b}; do
        timeout 140 python3 benchmarks/bench_block.py --model "$model" --json "$OUT/block_$model.json" \
            > "$OUT/block_$model.txt" 2>&1; tail -n 8 "$OUT/block_$model.txt"
    done
else
    if [ -n "${QUANTIZE:-}" ]; then
        timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k "not gemm" \
            > "$OUT/gpu_tests_quantize.txt" 2>&1; tail -n 3 "$OUT/gpu_tests_quantize.txt"
    fi
    timeout 400 python3 -m pytest -q -p no:cacheprovider ${REST_TESTS:-tests/test_paged_attention_triton.py \
        tests/test_kv_cache_pass.py tests/test_training_recipe.py tests/test_inductor.py} > "$OUT/gpu_tests_rest.txt" 2>&1
    tail -n 3 "$OUT/gpu_tests_rest.txt"
fi
