#!/usr/bin/env bash
# One device call (about 4 minutes): loads in flight. The warp-specialized kernel's producer with
# 1-3 pages requested ahead (ab_decode_ws.py), the single-query kernel with 1-2 tiles ahead
# (ab_decode_ahead.py), then their GPU tests. Results under $OUT.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
NVFP4_TEST_ON_GPU=1 timeout 45 python3 -m pytest -q -x -p no:cacheprovider tests/test_paged_attention_wgmma.py \
    -k "equals_wgmma_kernel" > "$OUT/smoke.txt" 2>&1; echo "smoke rc $?"; tail -n 2 "$OUT/smoke.txt"
timeout 100 python3 benchmarks/ab_decode_ws.py --configs 8x128x168x2x1 8x128x168x2x2 8x152x168x2x3 \
    --splits 22 --json "$OUT/ab_decode_ws.json" > "$OUT/ab_decode_ws.txt" 2>&1; echo "ab ws rc $?"
grep -v "^{" "$OUT/ab_decode_ws.txt" | tail -n 40
timeout 60 python3 benchmarks/ab_decode_ahead.py --json "$OUT/ab_decode_ahead.json" > "$OUT/ab_decode_ahead.txt" 2>&1
echo "ab ahead rc $?"; grep -v "^{" "$OUT/ab_decode_ahead.txt" | tail -n 20
NVFP4_TEST_ON_GPU=1 timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_wgmma.py \
    tests/test_paged_attention_triton.py -k "(ws and (unequal or zero_v or 12)) or two_tiles_ahead" \
    > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc $?"; tail -n 3 "$OUT/gpu_tests.txt"
