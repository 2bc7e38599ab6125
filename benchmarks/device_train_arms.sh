# Sourced by the device scripts of the training-quality runs (device_sensitivity.sh,
# device_keep_first_block.sh): the quality-run model (dim 512, 8 blocks of 4 x 128 heads, AdamW
# 1e-3, batch 16, CUDA graphs, $STEPS steps) and one training process per arm.
COMMON=(--device cuda --cuda-graphs --dim 512 --layers 8 --heads 4 --lr 1e-3 --batch-size 16 --steps "$STEPS"
        --eval-every 250)

record_versions() {  # record_versions FILE: the GPU, driver, torch and triton of the run
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$1"
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$1"
}

arm() {  # arm DIR LOG ARGS...: one training process (examples/train_video.py ARGS) into DIR, output to LOG
  local dir=$1 log=$2; shift 2
  mkdir -p "$dir"
  timeout "${LIMIT:-500}" python3 examples/train_video.py "${COMMON[@]}" --out "$dir" "$@" > "$log" 2>&1
}
