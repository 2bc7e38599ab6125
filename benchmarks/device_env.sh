# Sourced by the device scripts: results under $OUT (default out/), the repo on PYTHONPATH, and the
# GPU, driver, torch and Triton versions in $OUT/gpu.txt (RESULTS.md quotes them with every number).
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
