"""What every pass shares: its result type, the compile context, and small FX helpers."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from ..config import Config


@dataclass
class PassResult:
    """What a pass returns: the graph module, whether it changed, and a count of what it changed."""

    graph_module: fx.GraphModule
    modified: bool
    count: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class GemmSite:
    """One linear of a captured graph, as the passes see it; the report is built from these."""

    name: str                     # module name, e.g. "blocks.0.ffn.up"
    graph_id: int
    m: int                        # rows of the activation (all leading dims flattened)
    k: int
    n: int
    dtype: torch.dtype
    quantized: bool = False
    reason: str = ""              # why it stays in bf16, when it does
    epilogue: list[str] = field(default_factory=list)
    input_scale: str = ""         # how the activation's per-tensor scale is found
    backend: str = ""
    strategy: str = ""
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0


@dataclass
class Boundary:
    """A point where data leaves the NVFP4 envelope (a GEMM's output read in bf16 by something else)."""

    graph_id: int
    producer: str
    consumers: list[str]
    nbytes: int
    dtype: str


@dataclass
class AttentionSite:
    """One attention call of a captured graph and what the ``nvfp4_kv_cache`` pass did with it."""

    graph_id: int
    node: str                     # the attention node's name in the graph
    converted: bool
    reason: str                   # what the cache is (converted) or why it was left alone
    k_buffer: str = ""            # the K/V buffers the model keeps, when there is a cache
    v_buffer: str = ""
    tokens: int = 0               # the buffers' token capacity


@dataclass
class CompileContext:
    """State a pipeline run shares between passes for one captured graph."""

    config: Config
    graph_id: int
    param_names: dict[str, str]          # placeholder name -> parameter name ("blocks.0.ffn.up.weight")
    params: dict[str, torch.Tensor]      # placeholder name -> the real tensor passed for it
    num_blocks: int
    weight_cache: object | None = None   # runtime.WeightCache: quantize each parameter once
    paged_buffers: set[str] = field(default_factory=set)  # K/V buffers the model's graphs moved to NVFP4 pages
    sites: list[GemmSite] = field(default_factory=list)
    boundaries: list[Boundary] = field(default_factory=list)
    site_of_node: dict[str, GemmSite] = field(default_factory=dict)  # GEMM node name -> site
    attention_sites: list[AttentionSite] = field(default_factory=list)
    inductor: str = "off"                # whether Inductor compiled the graph's other ops, and why not


LINEAR_TARGETS = (torch._C._nn.linear, torch.nn.functional.linear, torch.ops.aten.linear.default)


def example_value(node: Any) -> torch.Tensor | None:
    """The fake tensor FX recorded for ``node`` (Dynamo's ``example_value`` or export's ``val``)."""
    if not isinstance(node, fx.Node):
        return None
    value = node.meta.get("example_value", node.meta.get("val"))
    return value if isinstance(value, torch.Tensor) else None


def is_call(node: Any, targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def getitem(graph: fx.Graph, node: fx.Node, index: int) -> fx.Node:
    return graph.call_function(operator.getitem, (node, index))


def copy_meta_value(dst: fx.Node, value: torch.Tensor | None) -> None:
    if value is not None:
        dst.meta["example_value"] = value
        dst.meta["val"] = value


_SOURCE_TOKEN = re.compile(r"\[['\"]?([^'\"\]]+)['\"]?\]|\.([A-Za-z_][A-Za-z0-9_]*)")


def parameter_name_from_source(source_name: str) -> str | None:
    """``L['self']._modules['ffn']._parameters['weight']`` -> ``ffn.weight`` (Dynamo source names)."""
    tokens = [a or b for a, b in _SOURCE_TOKEN.findall(source_name)]
    if not tokens or "_parameters" not in tokens and "_buffers" not in tokens:
        return None
    parts = [t for t in tokens[1:] if t not in ("_modules", "_parameters", "_buffers", "__dict__")]
    return ".".join(parts) or None
