"""Running a rewritten graph while recording static activation amax values."""

from __future__ import annotations

import torch
import torch.fx as fx

from . import ops


class AmaxObserver(fx.Interpreter):
    """Runs a graph like ``gm.forward`` but, at each quantize with a static-amax buffer, raises the
    buffer to max |x| and quantizes with x's own amax (the buffer is not trusted yet)."""

    def run_node(self, node: fx.Node):
        if node.op == "call_function" and node.target is ops.QUANTIZE:
            amax_node = node.args[1]
            if isinstance(amax_node, fx.Node) and amax_node.op == "get_attr":
                x = self.env[node.args[0]]
                buffer = self.fetch_attr(amax_node.target)
                observed = x.detach().abs().amax().float()
                buffer.copy_(observed if torch.isnan(buffer) else torch.maximum(buffer, observed))
                return node.target(x, None, *[self.env.get(a, a) if isinstance(a, fx.Node) else a for a in node.args[2:]])
        return super().run_node(node)


def run_observing(gm: fx.GraphModule, args) -> object:
    return AmaxObserver(gm).run(*args)
