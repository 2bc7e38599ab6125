"""NVFP4 for linears that TorchDynamo leaves to eager Python.

After a graph break Dynamo cannot always resume capture (a break inside a ``for`` loop over
blocks runs the rest of that frame eagerly), and linears reached there would silently stay in
bf16. ``install`` gives each eligible ``nn.Linear`` a forward that, *outside* a captured graph
only, runs the same nvfp4 ops as the rewritten graphs; inside a graph (``is_compiling()``) it is
the plain linear, which the passes rewrite as usual. The report lists linears run this way.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .backends import resolve_backend
from .config import FLOAT_DTYPES


class _EagerNVFP4:
    """The eager path of one linear: weight quantized once per weight version, input per call."""

    def __init__(self, name: str, module: nn.Linear, config, ran: set[str], active: dict, cache):
        self.name, self.module, self.config, self.ran, self.active = name, module, config, ran, active
        self.cache = cache  # the runtime's WeightCache, shared with the captured graphs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in FLOAT_DTYPES or self.config.activation_scales == "static":
            return F.linear(x, self.module.weight, self.module.bias)  # no calibrated scale exists outside graphs
        backend, _ = resolve_backend(self.config.backend, x.device)
        xd, xs, xg = ops.quantize(x, None, 1, backend)
        w = self.cache.get(self.module.weight)
        out, _ = ops.gemm(xd, xs, xg, w.data, w.scale, w.global_scale, self.module.bias, "none", None, None,
                          x.dtype, backend)
        self.ran.add(self.name)
        return out


def _forward_through(path: _EagerNVFP4):
    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        # Inside a captured graph the passes rewrite this linear; outside a call of the compiled
        # model (the user calling the original model) it is the plain linear.
        if torch.compiler.is_compiling() or not path.active["on"]:
            return F.linear(x, self.weight, self.bias)
        return path.forward(x)

    return forward


def install(model: nn.Module, config, is_eligible, active: dict, cache) -> tuple[set[str], list]:
    """Give every eligible linear of ``model`` the eager NVFP4 path, taken while ``active["on"]``.

    Returns (names of linears that ran it, the handles to undo it with :func:`uninstall`).
    """
    ran: set[str] = set()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and is_eligible(name, module):
            path = _EagerNVFP4(name, module, config, ran, active, cache)
            module.forward = types.MethodType(_forward_through(path), module)
            handles.append(path)
    return ran, handles


def uninstall(handles) -> None:
    """Restore the original forwards."""
    for path in handles:
        if "forward" in vars(path.module):
            del path.module.forward
