#!/usr/bin/env bash
# One device call: GPU tests of the training quantize/GEMM path and the paged attention kernel,
# then bench_attention, bench_training and a short step-time probe of the H100 training config.
# Usage on the GPU machine (repo root):  bash benchmarks/device_kernels.sh
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 NVFP4_TEST_ON_GPU=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_paged_attention_triton.py tests/test_training_recipe.py \
  "tests/test_triton_backend.py::test_quantize_training_operands_bit_identical" \
  "tests/test_triton_backend.py::test_stochastic_draws_depend_on_seed_and_rht_amax_is_the_transformed_one" 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt"
unset NVFP4_TEST_ON_GPU
timeout 150 python3 benchmarks/bench_attention.py --json "$OUT/attention.json" 2>&1 | tail -20 | tee "$OUT/attention.txt"
timeout 120 python3 benchmarks/bench_training.py --json "$OUT/training.json" 2>&1 | tail -12 | tee "$OUT/training.txt"
timeout 60 python3 examples/train_video.py --arms nvfp4 --device cuda --dim 256 --layers 4 --batch-size 16 \
  --steps 60 --eval-every 60 --out "$OUT/probe" 2>&1 | tail -2
python3 -c "import json; a=json.load(open('$OUT/probe/arm_nvfp4.json')); print('probe nvfp4 step s', a['step_seconds_median'])"
