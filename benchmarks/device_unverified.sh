#!/usr/bin/env bash
# One device call for what earlier sessions built but could not run on a GPU (no device was lent):
#   1. the Gluon decode kernel's unequal-length fix (d13f44a): its GPU test, with NaN before the
#      scale arrays, and the rest of the Gluon kernel's tests;
#   2. page tables kept on the device (b208b55): bench_attention_eager.py, tables rebuilt vs kept
#      (predicted: an eager Tq = 1 call ~0.2 ms -> ~0.10-0.12 ms), with the host profile;
#   3. the KV pass's tests on the GPU (the twenty-third session's cache patterns: flash layout,
#      concatenated pasts, the rolled sink + window, dynamic ints) and the demo on CUDA.
# About 4 minutes. Usage on the GPU machine (repo root):  bash benchmarks/device_unverified.sh
# (results under $OUT)
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
NVFP4_TEST_ON_GPU=1 timeout ${TESTS_S:-240} python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_wgmma.py \
    tests/test_kv_cache.py tests/test_kv_cache_pass.py > "$OUT/gpu_tests.txt" 2>&1
tail -n 8 "$OUT/gpu_tests.txt"
timeout ${BENCH_S:-150} python3 benchmarks/bench_attention_eager.py --json "$OUT/attention_eager.json" --profile 200 \
    > "$OUT/attention_eager.txt" 2>&1
tail -n 40 "$OUT/attention_eager.txt"
timeout ${DEMO_S:-120} python3 -m nvfp4_compiler.cli demo --device cuda --json > "$OUT/demo.json" 2> "$OUT/demo.err"
python3 -c "import json; d = json.load(open('$OUT/demo.json')); print(d['chunks'], d['kv_cache'])" 2>&1 | tail -n 3
