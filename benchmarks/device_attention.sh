#!/usr/bin/env bash
# One device call for the attention work: GPU tests (kernel, scratch route, KV pass, generation
# paths, training recipe), the tile/crossover sweep, the single-query kernel's sweep, then
# bench_attention on both models.
# Usage on the GPU machine (repo root):  bash benchmarks/device_attention.sh   (results under $OUT)
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
NVFP4_TEST_ON_GPU=1 timeout 200 python3 -m pytest -q -p no:cacheprovider -x tests/test_paged_attention_triton.py \
    tests/test_kv_cache_pass.py tests/test_training_recipe.py > "$OUT/gpu_tests.txt" 2>&1
tail -n 5 "$OUT/gpu_tests.txt"
timeout 60 python3 benchmarks/check_kv_paths.py > "$OUT/kv_paths.txt" 2>&1; tail -n 8 "$OUT/kv_paths.txt"
timeout ${SWEEP_S:-200} python3 benchmarks/bench_attention.py --sweep --models wan-1.3b --json "$OUT/attention_sweep.json" \
    > "$OUT/attention_sweep.txt" 2>&1; tail -n 60 "$OUT/attention_sweep.txt"
timeout ${SWEEP_S:-200} python3 benchmarks/bench_attention.py --sweep-decode --models wan-1.3b \
    --json "$OUT/attention_sweep_decode.json" > "$OUT/attention_sweep_decode.txt" 2>&1
tail -n 5 "$OUT/attention_sweep_decode.txt"
timeout ${BENCH_S:-150} python3 benchmarks/bench_attention.py --json "$OUT/attention.json" > "$OUT/attention.txt" 2>&1
tail -n 14 "$OUT/attention.txt"
