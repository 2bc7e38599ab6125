"""Where data leaves the NVFP4 envelope in a rewritten graph, and how many bytes cross."""

from __future__ import annotations

import operator

import torch.fx as fx

from . import ops
from .passes.base import Boundary, CompileContext, example_value, is_call


def _describe(node: fx.Node) -> str:
    if node.op == "output":
        return "graph output"
    if node.target is ops.QUANTIZE:
        return "re-quantized for the next GEMM"
    if node.target is ops.GEMM:
        return "gate/residual of a GEMM epilogue"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.op}:{target}"


def find_boundaries(gm: fx.GraphModule, ctx: CompileContext) -> list[Boundary]:
    """Every NVFP4 GEMM output is written in bf16/fp32 and read by its consumers: one boundary each."""
    found = []
    for gemm in gm.graph.nodes:
        if not is_call(gemm, (ops.GEMM,)):
            continue
        for out in gemm.users:
            if not (is_call(out, (operator.getitem,)) and out.args[1] == 0):
                continue
            value = example_value(out)
            nbytes = value.numel() * value.element_size() if value is not None else 0
            consumers = sorted({_describe(u) for u in out.users})
            site = ctx.site_of_node[gemm.name]
            found.append(Boundary(ctx.graph_id, site.name, consumers, nbytes, str(value.dtype) if value is not None else "?"))
    return found
