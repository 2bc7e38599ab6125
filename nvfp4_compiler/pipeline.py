"""The compile pipeline: one captured FX graph in, a graph of nvfp4 ops out. Reads like a recipe."""

from __future__ import annotations

import torch.fx as fx

from .envelope import find_boundaries
from .passes import CompileContext, fuse_epilogues, lower, nvfp4_kv_cache, quantize_gemms


def run_pipeline(gm: fx.GraphModule, ctx: CompileContext) -> fx.GraphModule:
    """Rewrite ``gm`` in place into the NVFP4 envelope; what each pass did lands in ``ctx``."""
    # Move K/V caches the model keeps in dense buffers into paged NVFP4 storage.
    gm = nvfp4_kv_cache(gm, ctx).graph_module
    # Put every eligible linear into NVFP4: quantize its input, pre-quantize its weight.
    gm = quantize_gemms(gm, ctx).graph_module
    # Fold bias/activation/gate/residual and the next quantization's amax into GEMM epilogues.
    if ctx.config.fuse_epilogues:
        gm = fuse_epilogues(gm, ctx).graph_module
    # Pick the kernel of every nvfp4 op by device and shape.
    gm = lower(gm, ctx).graph_module
    # Record where data leaves the envelope, for the report.
    ctx.boundaries.extend(find_boundaries(gm, ctx))
    return gm
