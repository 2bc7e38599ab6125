"""Handing a rewritten graph to Inductor, so the ops around the NVFP4 GEMMs are fused too.

After the passes, a graph holds ``nvfp4::*`` custom ops (opaque to Inductor: it calls them as
extern kernels through their real implementation, shaped by their fake one) and everything
else the model does: norms, modulation, RoPE, attention. Run as captured, those run eagerly, one
kernel per op, while a bf16 baseline under ``torch.compile`` gets them fused. Inductor fuses them
here as well. Training graphs hold ``nvfp4::linear_train``, whose registered autograd formula
AOTAutograd traces into the backward graph; Inductor's partitioner then also chooses what the
forward saves (the NVFP4 x^T of each linear, and what is cheaper to keep than to recompute).

The weight slots of :class:`~nvfp4_compiler.runtime.GraphRunner` are get_attr buffers that the
runner re-points on every call (one graph serves every block with the same code). Inductor would
bake the buffers it saw at compile time into the compiled function, so they are first lifted into
trailing graph inputs, and the runner passes their current values on each call.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx

# Graphs calling Python functions of this package (the KV cache runtime, which appends to a
# cache object) are not graphs of pure ops: AOTAutograd would trace into those functions.
_PACKAGE = __name__.rsplit(".", 1)[0]


def should_compile(gm: fx.GraphModule, setting: bool | None, example_inputs) -> tuple[bool, str]:
    """Whether Inductor compiles the graph's non-NVFP4 ops, and why (for the report).

    ``setting`` is ``Config.inductor``: True, False, or None (on for graphs on a CUDA device).
    """
    if setting is False:
        return False, "off (Config.inductor=False)"
    python_calls = sorted({_qualname(n.target) for n in gm.graph.nodes
                           if n.op == "call_function" and _defined_in_package(n.target)})
    if python_calls:
        return False, f"off: the graph calls {', '.join(python_calls)} (KV-cache runtime)"
    if setting is None and not _on_cuda(example_inputs):
        return False, "off (Config.inductor=None compiles graphs on CUDA devices only)"
    return True, "on"


def lift_attributes(gm: fx.GraphModule) -> list[str]:
    """Turn every tensor get_attr node into a graph input after the existing ones.

    Returns the attribute names in the order of the new inputs. The graph then computes the same
    function of ``(*inputs, *(getattr(gm, name) for name in names))``.
    """
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    names: list[str] = []
    for node in [n for n in graph.nodes if n.op == "get_attr"]:
        value = getattr(gm, node.target)
        if not isinstance(value, torch.Tensor):
            continue
        anchor = placeholders[-1] if placeholders else next(iter(graph.nodes))
        insert = graph.inserting_after(anchor) if placeholders else graph.inserting_before(anchor)
        with insert:
            lifted = graph.placeholder(f"lifted_{node.target}")
        lifted.meta.update(node.meta)
        node.replace_all_uses_with(lifted)
        graph.erase_node(node)
        placeholders.append(lifted)
        names.append(node.target)
    graph.lint()
    gm.recompile()
    return names


@dataclass
class InductorGraph:
    """A rewritten graph compiled by Inductor, and how to call it."""

    fn: Callable
    lifted: list[str]    # attributes of the rewritten graph module passed after the graph's inputs
    used: list[int]      # positions in (*inputs, *lifted) the compiled code takes (unused ones dropped)

    def __call__(self, gm: fx.GraphModule, args) -> object:
        full = (*args, *(getattr(gm, name) for name in self.lifted))
        return self.fn(*(full[i] for i in self.used))


def compile_graph(gm: fx.GraphModule, example_inputs, cuda_graphs: bool = False) -> tuple[InductorGraph | None, str]:
    """Inductor-compile a copy of ``gm`` with its tensor attributes lifted to inputs; with
    ``cuda_graphs``, Inductor replays the whole graph as CUDA graphs (``mode="reduce-overhead"``):
    the per-op host cost of the NVFP4 ops' Python launchers is paid once, at capture.

    Inputs nothing reads are dropped first: Dynamo still passes the bf16 weights each rewritten
    linear replaced, and CUDA-graph replays copy the inputs they do not know to be static.

    Returns (the compiled graph or None, note). On an Inductor failure the graph keeps running as
    captured, and the note (shown in the report) says why.
    """
    from torch._inductor.compile_fx import compile_fx

    lifted_gm = fx.GraphModule(gm, copy.deepcopy(gm.graph))  # shares gm's tensors, copies none
    names = lift_attributes(lifted_gm)
    inputs = [*example_inputs, *(getattr(gm, name) for name in names)]
    used = _drop_unused_inputs(lifted_gm)
    try:
        patches = {"triton.cudagraphs": True} if cuda_graphs else {}
        fn = compile_fx(lifted_gm, [inputs[i] for i in used], config_patches=patches)
        return InductorGraph(fn, names, used), "on (CUDA graphs)" if cuda_graphs else "on"
    except Exception as err:  # Inductor raises many types; any of them means "run as captured"
        note = f"off: Inductor failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        warnings.warn(f"nvfp4: {note}; the graph runs as captured", stacklevel=2)
        return None, note


def _drop_unused_inputs(gm: fx.GraphModule) -> list[int]:
    """Erase placeholders without users; returns the positions of those kept."""
    used = []
    for i, node in enumerate([n for n in gm.graph.nodes if n.op == "placeholder"]):
        if node.users:
            used.append(i)
        else:
            gm.graph.erase_node(node)
    gm.recompile()
    return used


def _defined_in_package(target) -> bool:
    module = getattr(target, "__module__", "") or ""
    return module.startswith(_PACKAGE)


def _qualname(target) -> str:
    return getattr(target, "__qualname__", str(target))


def _on_cuda(example_inputs) -> bool:
    return any(isinstance(t, torch.Tensor) and t.is_cuda for t in example_inputs)
