#!/usr/bin/env bash
# Set up (idempotently) a virtual environment in .venv with nvfp4_compiler and its test tools.
#
# torch is the one heavy dependency: a torch that is already installed is reused (the venv sees
# the system site-packages); otherwise a CPU-only machine gets the CPU build, so pip never pulls
# gigabytes of CUDA wheels onto a machine that cannot use them.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
CPU_INDEX=https://download.pytorch.org/whl/cpu
TORCH_CPU_VERSION=2.13.0

if [ ! -x .venv/bin/python ]; then
  # A new environment takes about 2.5 GB (torch and triton most of it): say so before pip fails
  # half-way with "No space left on device".
  free_kb=$(df -Pk . 2>/dev/null | awk 'NR == 2 {print $4}') || true
  if [ -n "${free_kb:-}" ] && [ "$free_kb" -lt $((3 * 1024 * 1024)) ]; then
    echo "setup: warning: only $((free_kb / 1024)) MB free on this disk; a new .venv takes about 2.5 GB" >&2
  fi
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: reusing the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
PIP=(.venv/bin/python -m pip install -q)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" torch
  # A CPU wheel that pip can find locally (find-links) first, else PyTorch's CPU-only index.
  elif .venv/bin/python -m pip install -q --dry-run --no-deps --no-index "torch==$TORCH_CPU_VERSION" >/dev/null 2>&1; then
    "${PIP[@]}" "torch==$TORCH_CPU_VERSION"
  else
    "${PIP[@]}" "torch==$TORCH_CPU_VERSION" --index-url "$CPU_INDEX" --extra-index-url https://pypi.org/simple
  fi
fi
"${PIP[@]}" -e ".[test]"
