#!/usr/bin/env bash
# One device call for a change to the decode-attention kernels: the attention GPU tests, the
# single-query kernel A/B against older files (BEFORE, default .baseline/before), then
# bench_attention on both models.
# Usage on the GPU machine (repo root):  bash benchmarks/device_decode_ab.sh   (results under $OUT)
set -uo pipefail
BEFORE=${BEFORE:-.baseline/before}
source "$(dirname "$0")/device_env.sh"
NVFP4_TEST_ON_GPU=1 timeout ${TESTS_S:-300} python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_triton.py \
    tests/test_paged_attention_wgmma.py tests/test_kv_cache_pass.py > "$OUT/gpu_tests.txt" 2>&1
tail -n 8 "$OUT/gpu_tests.txt"
timeout ${AB_S:-150} python3 benchmarks/ab_decode_attention.py --before "$BEFORE" --tiles default \
    --programs-per-sm ${PPS:-4} --json "$OUT/ab_decode.json" > "$OUT/ab_decode.txt" 2>&1
tail -n 8 "$OUT/ab_decode.txt"
timeout ${BENCH_S:-150} python3 benchmarks/bench_attention.py --json "$OUT/attention.json" > "$OUT/attention.txt" 2>&1
tail -n 14 "$OUT/attention.txt"
