"""Static activation scales: recording their amax values while a rewritten graph runs (calibration),
and refusing to run with one never recorded."""

from __future__ import annotations

import torch
import torch.fx as fx

from . import ops

#: Name prefix of the graph buffers holding static activation amax values (quantize_gemms makes them).
STATIC_AMAX_PREFIX = "_nvfp4_amax_"
UNCALIBRATED = (
    "amax: this static activation scale was never calibrated; run nvfp4.calibrate(compiled, batches) "
    "before calling a model compiled with activation_scales='static'"
)


def static_amax_node(node: fx.Node) -> fx.Node | None:
    """The static-amax buffer (get_attr) a quantize or a quantizing GEMM reads, if it has one."""
    if node.op != "call_function" or node.target not in (ops.QUANTIZE, ops.GEMM_QUANTIZE):
        return None
    amax = node.args[1] if node.target is ops.QUANTIZE else node.args[-2]
    return amax if isinstance(amax, fx.Node) and amax.op == "get_attr" else None


class AmaxObserver(fx.Interpreter):
    """Runs a graph like ``gm.forward`` but, at each quantize with a static-amax buffer, raises the
    buffer to max |x| and quantizes with x's own amax (the buffer is not trusted yet). A quantizing
    GEMM runs as its two parts, so its output is observed the same way."""

    def run_node(self, node: fx.Node):
        amax_node = static_amax_node(node)
        if amax_node is None:
            return super().run_node(node)
        args = [self.env[a] if isinstance(a, fx.Node) else a for a in node.args]
        if node.target is ops.GEMM_QUANTIZE:  # gemm's arguments, then next_amax and the backend
            x, tile_rows = ops.GEMM(*args[:-2], args[-1])[0], 1
        else:
            x, tile_rows = args[0], args[2]
        buffer = self.fetch_attr(amax_node.target)
        observed = x.detach().abs().amax().float()
        buffer.copy_(observed if torch.isnan(buffer) else torch.maximum(buffer, observed))
        return ops.QUANTIZE(x, None, tile_rows, args[-1], **node.kwargs)


def run_observing(gm: fx.GraphModule, args) -> object:
    return AmaxObserver(gm).run(*args)


def check_calibrated(gm: fx.GraphModule) -> None:
    """Raise if a static activation amax of ``gm`` still holds its NaN "not calibrated" mark (the
    GPU kernels would quantize with it silently)."""
    for name, buffer in gm.named_buffers():
        if name.startswith(STATIC_AMAX_PREFIX) and bool(torch.isnan(buffer)):
            raise ValueError(UNCALIBRATED)
