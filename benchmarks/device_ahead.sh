#!/usr/bin/env bash
# One device call (about 5-6 minutes): loads in flight. The warp-specialized kernel's producer with
# 1-3 pages requested ahead (ab_decode_ws.py), the single-query kernel with 1-3 tiles ahead in
# registers or staged through shared memory by cp.async (ab_decode_ahead.py), their GPU tests, and
# Nsight Compute's stall reasons for the ws kernel.
# Results under $OUT (8 files: the device tool returns no more).
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
if [ "${SMOKE:-1}" = 1 ]; then   # SMOKE=0 skips this check (45 s) when device time is short
  NVFP4_TEST_ON_GPU=1 timeout 45 python3 -m pytest -q -x -p no:cacheprovider tests/test_paged_attention_wgmma.py \
      -k "equals_wgmma_kernel" > /tmp/smoke.txt 2>&1; echo "smoke rc $?"; tail -n 2 /tmp/smoke.txt
fi
timeout 100 python3 benchmarks/ab_decode_ws.py --configs 8x128x168x2x1 8x128x168x2x2 8x128x168x2x3 \
    --splits 22 --json "$OUT/ab_decode_ws.json" > "$OUT/ab_decode_ws.txt" 2>&1; echo "ab ws rc $?"
grep -v "^{" "$OUT/ab_decode_ws.txt" | tail -n 40
timeout 90 python3 benchmarks/ab_decode_ahead.py --json "$OUT/ab_decode_ahead.json" > "$OUT/ab_decode_ahead.txt" 2>&1
echo "ab ahead rc $?"; grep -v "^{" "$OUT/ab_decode_ahead.txt" | tail -n 20
NVFP4_TEST_ON_GPU=1 timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_wgmma.py \
    tests/test_paged_attention_triton.py -k "(ws and (unequal or zero_v or 12)) or loads_ahead" \
    > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc $?"; tail -n 3 "$OUT/gpu_tests.txt"
# Stall reasons and memory throughput of the ws kernel at one and three pages ahead (Tq = 64): if
# the loads in flight bind, long-scoreboard stalls dominate at one page and fall at three.
for a in ${NCU_AHEAD-1 3}; do   # NCU_AHEAD= skips the profiles (3 minutes) when device time is short
  ROUTE=ws AHEAD=$a timeout 90 ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section WarpStateStats \
      --section MemoryWorkloadAnalysis python3 benchmarks/profile_decode.py 64 > "$OUT/ncu_ws_ahead$a.txt" 2>&1
  echo "ncu ahead $a rc $?"; grep -E "Duration|DRAM Throughput|Long Scoreboard|Issued Warp|Warp Cycles Per Issued" "$OUT/ncu_ws_ahead$a.txt" | head -8
done
