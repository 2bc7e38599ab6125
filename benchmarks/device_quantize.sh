#!/usr/bin/env bash
# One device call for the quantize kernel: bench_quantize for kernel variants (carried in the
# ignored .baseline/, e.g. the kernel before a change) and for the working tree, in the same run,
# Nsight Compute on the working tree's kernel at two Wan-1.3B shapes, then the GPU tests.
# Usage on the GPU machine (repo root):  bash benchmarks/device_quantize.sh   (results under $OUT)
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
# Kernel variants kept out of git: .baseline/NAME/{quantize,numerics}.py, each swapped into a copy of
# the package and timed (CUDA-graph columns) in this same run.
for variant in .baseline/*/; do
    [ -f "$variant/quantize.py" ] || continue
    name=$(basename "$variant"); rm -rf "/tmp/$name" && mkdir -p "/tmp/$name" && cp -r nvfp4_compiler "/tmp/$name/"
    cp "$variant"/*.py "/tmp/$name/nvfp4_compiler/backends/triton/"
    PYTHONPATH=/tmp/$name timeout 150 python3 benchmarks/bench_quantize.py --graph-only \
        --json "$OUT/quantize_$name.json" > "$OUT/quantize_$name.txt" 2>&1
    python3 -c "import json, sys; r = json.load(open(sys.argv[1]))['results']
print(sys.argv[2], ' '.join(f\"{x['shape']}: {x['ms_amax_given_graph'] * 1e3:.1f} us {x['ratio_to_copy_given_graph']:.3f}x\" for x in r))" \
        "$OUT/quantize_$name.json" "$name"
done
PYTHONPATH=$PWD timeout 150 python3 benchmarks/bench_quantize.py --json "$OUT/quantize.json" > "$OUT/quantize.txt" 2>&1
tail -n 9 "$OUT/quantize.txt"
PYTHONPATH=$PWD timeout 120 ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section Occupancy \
    --section WarpStateStats --section LaunchStats --metrics smsp__inst_executed.sum \
    python3 benchmarks/profile_quantize.py 4680x8960 4680x1536 \
    > "$OUT/ncu_quantize.txt" 2>&1
grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|Block Size|Grid Size|Warp Cycles Per Issued|inst_executed" "$OUT/ncu_quantize.txt"
[ "${RUN_TESTS:-1}" = 1 ] && PYTHONPATH=$PWD NVFP4_TEST_ON_GPU=1 timeout ${TESTS_S:-300} python3 -m pytest -q -p no:cacheprovider -x tests/test_triton_backend.py \
    -k "quantize or encoder" > "$OUT/gpu_tests.txt" 2>&1
tail -n 3 "$OUT/gpu_tests.txt"
