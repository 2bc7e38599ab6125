"""Backends: implementations of the nvfp4 ops, chosen per op by the ``lower`` pass.

- ``reference``: plain PyTorch on any device; the definition of correct.
- ``triton``: generated kernels for Hopper and later GPUs (not built yet: selecting it raises).
- ``native``: FP4 tensor cores on sm_100+ (not built yet).
"""

from __future__ import annotations

import torch

from . import reference

KNOWN_BACKENDS = ("reference", "triton", "native")
AVAILABLE_BACKENDS = {"reference": reference}


def get_backend(name: str):
    """The module implementing the ops for backend ``name``."""
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"backend: expected one of {KNOWN_BACKENDS}, got {name!r}")
    if name not in AVAILABLE_BACKENDS:
        raise NotImplementedError(f"backend: {name!r} is planned but not implemented yet; use 'reference'")
    return AVAILABLE_BACKENDS[name]


def resolve_backend(requested: str, device: torch.device) -> tuple[str, str]:
    """(backend, why) for ``requested`` ("auto" or a name) on ``device``."""
    if requested != "auto":
        get_backend(requested)
        return requested, "requested in Config.backend"
    # Triton and native kernels are not built yet, so "auto" means the reference everywhere.
    return "reference", f"auto on {device.type}: the only implemented backend"
