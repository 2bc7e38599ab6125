"""Capture: model + example inputs -> torch.fx graphs, through TorchDynamo.

``torch.fx.symbolic_trace`` fails on real video transformers (shape-dependent slicing in RoPE,
data-dependent branches). TorchDynamo captures what it can into FX graphs and breaks the graph
around what it cannot, so capture survives; ``torch.compile`` hands each graph to a backend,
which is where the NVFP4 pipeline runs (:class:`NVFP4Backend`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from . import inductor
from .config import Config
from .passes.base import CompileContext, parameter_name_from_source
from .pipeline import run_pipeline
from .runtime import GraphRunner, WeightCache, WeightSlot


class CaptureError(RuntimeError):
    """A model (or part of it) could not be captured into a graph; the message says where and why."""


@dataclass
class CapturedGraph:
    """One graph the backend compiled, after the pipeline rewrote it."""

    graph_module: fx.GraphModule
    context: CompileContext


class NVFP4Backend:
    """A ``torch.compile`` backend that runs the NVFP4 pipeline on every graph Dynamo captures."""

    def __init__(self, model: nn.Module, config: Config):
        self.config = config
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self.num_blocks = config.count_blocks(name for name, _ in model.named_modules())
        self.graphs: list[CapturedGraph] = []
        self.calibrating = False  # set by nvfp4.calibrate: run graphs through the amax observer
        self.weight_cache = WeightCache(config.four_over_six)  # shared by all graphs: each parameter quantized once
        self.paged_buffers: set[str] = set()  # K/V buffers a graph moved into NVFP4 pages (their dense copy is stale)
        self.kv_converted = False  # a graph keeps K/V in NVFP4 pages (buffers, or pasts passed back as handles)

    def __call__(self, gm: fx.GraphModule, example_inputs: list) -> object:
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        param_names, params, arg_index = {}, {}, {}
        for i, (node, value) in enumerate(zip(placeholders, example_inputs)):
            name = self.param_names.get(id(value)) or _source_parameter_name(node)
            if name is not None and isinstance(value, torch.Tensor):
                param_names[node.name], params[node.name], arg_index[node.name] = name, value, i
        ctx = CompileContext(self.config, len(self.graphs), param_names, params, self.num_blocks, self.weight_cache,
                             paged_buffers=self.paged_buffers)
        gm = run_pipeline(gm, ctx)
        self.graphs.append(CapturedGraph(gm, ctx))
        self.kv_converted = self.kv_converted or any(site.converted for site in ctx.attention_sites)
        runner = GraphRunner(gm, ctx, _weight_slots(gm, arg_index, ctx), self.weight_cache, self.param_names, self)
        use, ctx.inductor = inductor.should_compile(gm, self.config.inductor, example_inputs)
        if use:
            runner.compiled, ctx.inductor = inductor.compile_graph(gm, example_inputs, self.config.cuda_graphs)
        return runner


def _source_parameter_name(node: fx.Node) -> str | None:
    grapharg = node.meta.get("grapharg")
    source = getattr(grapharg, "source", None)
    return parameter_name_from_source(source.name) if source is not None else None


def _weight_slots(gm: fx.GraphModule, arg_index: dict[str, int], ctx: CompileContext) -> list[WeightSlot]:
    """One slot per GEMM weight, found from the get_attr buffers quantize_gemms added."""
    from . import ops

    slots = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in ops.GEMMS:
            placeholder = node.meta["nvfp4_weight_placeholder"]
            prefix = node.args[3].target.removesuffix("_data")
            slots.append(WeightSlot(arg_index[placeholder], prefix, ctx.site_of_node[node.name]))
    return slots


def capture_graphs(model: nn.Module, *args, **kwargs) -> list[fx.GraphModule]:
    """The FX graphs TorchDynamo captures for ``model(*args, **kwargs)``, unmodified (for inspection)."""
    graphs: list[fx.GraphModule] = []

    def record(gm: fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=record, dynamic=False)(*args, **kwargs)
    torch._dynamo.reset()
    return graphs


def export_graph(model: nn.Module, args: tuple, kwargs: dict | None = None) -> torch.export.ExportedProgram:
    """One whole graph through ``torch.export`` (for checkpoint/ONNX export); errors name the cause."""
    try:
        return torch.export.export(model, args, kwargs or {})
    except Exception as err:  # torch.export raises many exception types; all mean "cannot capture"
        raise CaptureError(f"torch.export could not capture {type(model).__name__} as one graph: {_first_lines(err)}") from err


def _first_lines(err: BaseException, n: int = 12) -> str:
    return "\n".join(str(err).strip().splitlines()[:n])
