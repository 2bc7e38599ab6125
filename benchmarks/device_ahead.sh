#!/usr/bin/env bash
# One device call (about 8-9 minutes; SMOKE=0 NCU_AHEAD= cuts it to ~6): loads in flight, three ways.
# - the warp-specialized kernel's producer with 1-3 pages requested ahead (ab_decode_ws.py);
# - the one-warpgroup wgmma kernel with its page bytes copied into shared memory by cp.async, 1-4
#   pages ahead (ab_decode_ring.py; ring 2 is the control: one page ahead, as in registers);
# - the single-query kernel with 1-3 tiles ahead in registers or staged by cp.async (ab_decode_ahead.py);
# then their GPU tests and the KV pass's, and Nsight Compute's stall reasons for the ws kernel.
# Results under $OUT, 8 files (the device tool returns no more): gpu.txt (versions), three JSONs, the
# tables in log.txt, the tests' output, two Nsight reports.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
log="$OUT/log.txt"
if [ "${SMOKE:-1}" = 1 ]; then   # SMOKE=0 skips this check (45 s) when device time is short
  NVFP4_TEST_ON_GPU=1 timeout 45 python3 -m pytest -q -x -p no:cacheprovider tests/test_paged_attention_wgmma.py \
      -k "equals_wgmma_kernel or wgmma_kernels_bits" > /tmp/smoke.txt 2>&1; echo "smoke rc $?"; tail -n 2 /tmp/smoke.txt
fi
ab() {   # ab NAME SECONDS ARGS...: one A/B script, its table into the log, its rows into NAME.json
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" python3 "benchmarks/ab_decode_$name.py" "$@" --json "$OUT/ab_$name.json" > "/tmp/ab_$name.txt" 2>&1
  echo "ab $name rc $?" | tee -a "$log"; grep -v "^{" "/tmp/ab_$name.txt" | tee -a "$log" | tail -n 40
}
ab ring 150
ab ws 100 --configs 8x128x168x2x1 8x128x168x2x2 8x128x168x2x3 --splits 22
ab ahead 90
NVFP4_TEST_ON_GPU=1 timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_wgmma.py \
    tests/test_paged_attention_triton.py -k "ring or (ws and (unequal or zero_v or 12)) or loads_ahead" \
    > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc $?"; tail -n 3 "$OUT/gpu_tests.txt"
# the KV pass's GPU tests, six of which have never run on a GPU (the twenty-fourth session's step limit)
NVFP4_TEST_ON_GPU=1 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kv_cache_pass.py \
    >> "$OUT/gpu_tests.txt" 2>&1; echo "kv pass tests rc $?"; tail -n 3 "$OUT/gpu_tests.txt"
# Stall reasons and memory throughput of the ws kernel at one and three pages ahead (Tq = 64): if
# the loads in flight bind, long-scoreboard stalls dominate at one page and fall at three.
for a in ${NCU_AHEAD-1 3}; do   # NCU_AHEAD= skips the profiles (3 minutes) when device time is short
  ROUTE=ws AHEAD=$a timeout 90 ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section WarpStateStats \
      --section MemoryWorkloadAnalysis python3 benchmarks/profile_decode.py 64 > "$OUT/ncu_ws_ahead$a.txt" 2>&1
  echo "ncu ahead $a rc $?"; grep -E "Duration|DRAM Throughput|Long Scoreboard|Issued Warp|Warp Cycles Per Issued" "$OUT/ncu_ws_ahead$a.txt" | head -8
done
