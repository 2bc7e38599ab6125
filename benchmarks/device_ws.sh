#!/usr/bin/env bash
# One device call: the warp-specialized Gluon decode kernel (attention_wgmma_ws.py) checked and
# timed, then what benchmarks/device_unverified.sh owes. Results under $OUT.
#   1. a smoke test of the new kernel (a deadlocked mbarrier would hang: each step has a timeout);
#   2. ab_decode_ws.py: ws configs vs the wgmma kernel vs flash SDPA at Tq 16/32/64, both caches;
#   3. the Gluon tests (both kernels) and the KV tests on the GPU, the eager bench, the demo.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
NVFP4_TEST_ON_GPU=1 timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_paged_attention_wgmma.py \
    -k "equals_wgmma_kernel" > /tmp/ws_smoke.txt 2>&1; echo "smoke rc $?"; tail -n 3 /tmp/ws_smoke.txt
timeout ${AB_S:-180} python3 benchmarks/ab_decode_ws.py --configs ${CONFIGS:-8x128x168x2 8x128x168x3 4x96x128x2} \
    --splits ${SPLITS:-22} --json "$OUT/ab_decode_ws.json" > "$OUT/ab_decode_ws.txt" 2>&1; echo "ab rc $?"
grep -v "^{" "$OUT/ab_decode_ws.txt" | tail -n 30
TESTS_S=${TESTS_S:-170} BENCH_S=${BENCH_S:-80} DEMO_S=${DEMO_S:-50} bash "$(dirname "$0")/device_unverified.sh"
