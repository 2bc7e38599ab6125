"""Backends: implementations of the nvfp4 ops, chosen per op by the ``lower`` pass.

- ``reference``: plain PyTorch on any device; the definition of correct.
- ``triton``: generated kernels (NVFP4 tiles decoded in registers, tensor-core MMA); on CUDA GPUs
  from Ampere on, and on CPU under ``TRITON_INTERPRET=1`` for tests.
- ``native``: FP4 tensor cores on sm_100+ (Blackwell) through PyTorch's NVFP4 ``scaled_mm``;
  picked by ``auto`` on such GPUs only (inference GEMMs; training keeps the Triton kernels).
"""

from __future__ import annotations

import importlib
import os

import torch

KNOWN_BACKENDS = ("reference", "triton", "native")
_MODULES = {"reference": "nvfp4_compiler.backends.reference", "triton": "nvfp4_compiler.backends.triton",
            "native": "nvfp4_compiler.backends.native"}


def get_backend(name: str):
    """The module implementing the ops for backend ``name``."""
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"backend: expected one of {KNOWN_BACKENDS}, got {name!r}")
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as err:
        raise RuntimeError(f"backend: {name!r} cannot be loaded ({err}); install triton or use 'reference'") from err


def triton_usable(device: torch.device) -> bool:
    """Triton kernels run on CUDA GPUs of compute capability >= 8.0, or anywhere under the interpreter."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def native_usable(device: torch.device) -> bool:
    """FP4 tensor cores (sm_100+) with PyTorch's NVFP4 scaled_mm (``native.available``)."""
    from .native import available

    return available(device)


def resolve_backend(requested: str, device: torch.device) -> tuple[str, str]:
    """(backend, why) for ``requested`` ("auto" or a name) on ``device``."""
    if requested != "auto":
        get_backend(requested)
        if requested == "triton" and not triton_usable(device):
            raise ValueError(f"backend: 'triton' needs a CUDA GPU (sm_80+) or TRITON_INTERPRET=1, got device {device}")
        if requested == "native" and not native_usable(device):
            raise ValueError(f"backend: 'native' needs FP4 tensor cores (CUDA compute capability 10.0+) and a "
                             f"PyTorch with torch.nn.functional.scaled_mm, got device {device}")
        return requested, "requested in Config.backend"
    if native_usable(device):
        return "native", f"auto on {torch.cuda.get_device_name(device)}: FP4 tensor cores"
    if device.type == "cuda" and triton_usable(device):
        return "triton", f"auto on {torch.cuda.get_device_name(device)}"
    return "reference", f"auto on {device.type}: no GPU kernels here"
