"""Pass ``lower``: choose the backend that runs each nvfp4 op, by device and shape.

Matches:  every nvfp4.quantize / nvfp4.gemm / nvfp4.gemm_quantize / nvfp4.dequantize node
Rewrite:  its ``backend`` argument (the last) set to the backend chosen for its device

Requires: ``quantize_gemms`` (and optionally ``fuse_epilogues``) has run.
Ensures: every nvfp4 op names an implemented backend; each GEMM site records which one, and
the strategy it uses.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from .. import ops
from ..backends import resolve_backend
from .base import CompileContext, PassResult, example_value, is_call

NVFP4_OPS = (ops.QUANTIZE, *ops.GEMMS, ops.DEQUANTIZE)
STRATEGIES = {
    "reference": "dequantize tiles to fp32, torch.matmul, epilogue in fp32 (activation quantized by a separate op)",
    "native": "FP4 tensor cores: scaled_mm with 1x16 E4M3 + per-tensor scales (cuBLASLt), epilogue in PyTorch",
}


def _strategy(backend: str, m: int) -> str:
    if backend == "triton":
        from ..backends.triton.gemm import strategy_for

        return "triton: " + strategy_for(m)
    return STRATEGIES.get(backend, backend)


def _graph_device(gm: fx.GraphModule) -> torch.device:
    """The device the graph computes on: that of its first tensor input (graphs are single-device)."""
    for node in gm.graph.nodes:
        value = example_value(node)
        if node.op == "placeholder" and value is not None:
            return value.device
    return torch.device("cpu")


def lower(gm: fx.GraphModule, ctx: CompileContext) -> PassResult:
    """Fill in the backend of every nvfp4 op (see module docstring)."""
    count = 0
    device = _graph_device(gm)
    backend, _why = resolve_backend(ctx.config.backend, device)
    for node in gm.graph.nodes:
        if not is_call(node, NVFP4_OPS):
            continue
        node.args = (*node.args[:-1], backend)
        if node.target in ops.GEMMS:
            site = ctx.site_of_node[node.name]
            site.backend = backend
            site.strategy = _strategy(backend, site.m)
            if node.target is ops.GEMM_QUANTIZE:
                site.strategy += "; output quantized to the next GEMM's NVFP4 operand in the same op (static scale)"
        count += 1
    gm.recompile()
    unresolved = [n.name for n in gm.graph.nodes if is_call(n, NVFP4_OPS) and not n.args[-1]]
    assert not unresolved, f"lower: ops left without a backend: {unresolved}"
    return PassResult(gm, count > 0, count)
