"""``nvfp4.compile``, ``nvfp4.calibrate`` and ``nvfp4.report``: the public entry points."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from dataclasses import asdict

import torch
import torch.fx as fx
from rich.progress import Progress
from torch import nn

from . import eager_fallback, ops
from .calibration import STATIC_AMAX_PREFIX, static_amax_node
from .capture import CaptureError, NVFP4Backend
from .config import Config
from .report import Report, latest_per_name


#: Dynamo counts recompilations per code object, over every instance of a model class: models of
#: one class compiled one after another in a process (the arms of an experiment, an ablation
#: sweep) each add their graphs (train, eval, each input shape), and past the default limit of 8
#: the next model runs eagerly with nothing captured. Compiling raises the limit to at least this
#: (once, globally: a per-call scoped change would cost ~4 us of host time on every call). Note
#: that Dynamo's cache keeps each compiled model, weights included, alive until
#: ``torch._dynamo.reset()``; a sweep that drops its models should call it between them.
RECOMPILE_LIMIT = 64


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)


class NVFP4Module(nn.Module):
    """A model whose eligible GEMMs run in NVFP4. Call it like the original model.

    Built by :func:`compile`. The first call (and the first call with each new input shape)
    captures graphs and rewrites them; later calls with the same shapes reuse them.
    """

    def __init__(self, model: nn.Module, config: Config):
        super().__init__()
        self.model = model
        self.config = config
        self.backend = NVFP4Backend(model, config)
        # Linears that Dynamo leaves to eager Python (after a graph break it cannot resume from)
        # still run in NVFP4, through the same ops; the report lists them.
        self._in_call = {"on": False}
        self.eager_linears, self._eager_handles = eager_fallback.install(
            model, config, self._eligible, self._in_call, self.backend.weight_cache)
        _raise_recompile_limit()
        self._compiled = torch.compile(model, backend=self.backend, dynamic=False, fullgraph=config.fullgraph)

    def forward(self, *args, **kwargs):
        self._in_call["on"] = True
        try:
            with self._no_eager_fallback_once_kv_converted(), self._dynamic_ints():
                out = self._compiled(*args, **kwargs)
        except torch._dynamo.exc.FailOnRecompileLimitHit as err:
            raise CaptureError(
                f"{type(self.model).__name__}: torch._dynamo.config.recompile_limit="
                f"{torch._dynamo.config.recompile_limit} reached (each new input shape, cache position or other "
                "Python number the model specializes on is a new capture). Past it Dynamo would run the model "
                "eagerly, whose attention reads the dense K/V buffers that the converted graphs no longer write; "
                "raise the limit (it is a global setting) to go on") from err
        except torch._dynamo.exc.Unsupported as err:
            raise CaptureError(_capture_message(self.model, err)) from err
        except torch._dynamo.exc.BackendCompilerFailed as err:
            raise err.inner_exception from err  # a pass failed: show its own error, not Dynamo's wrapper
        finally:
            self._in_call["on"] = False
        if not self.backend.graphs and _linear_names(self.model):
            raise CaptureError(
                f"{type(self.model).__name__}: TorchDynamo captured no graph, so nothing was quantized "
                "(the whole forward ran eagerly; set TORCH_LOGS=graph_breaks,recompiles to see why: a graph break, or "
                f"torch._dynamo.config.recompile_limit={torch._dynamo.config.recompile_limit} reached)"
            )
        return out

    def _no_eager_fallback_once_kv_converted(self):
        """Once a KV cache lives in NVFP4 pages, an eager run (what Dynamo falls back to past its
        recompile limit) would attend over the stale dense buffers and silently give other results
        (or over a past handle's NaN): make hitting the limit an error instead (about 4 us a call;
        only such models pay it)."""
        if not self.backend.kv_converted:
            return contextlib.nullcontext()
        return torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)

    def _dynamic_ints(self):
        """Config.dynamic_ints added to Dynamo's dynamic sources for this call (a setting of
        torch.compiler.config, so that other compiled models keep theirs)."""
        ours = self.config.dynamic_sources()
        if not ours:
            return contextlib.nullcontext()
        if not hasattr(torch.compiler.config, "dynamic_sources"):  # an older torch: one capture per value
            warnings.warn(f"dynamic_ints: torch {torch.__version__} has no torch.compiler.config.dynamic_sources; "
                          "each new value of these ints is a new capture", stacklevel=3)
            return contextlib.nullcontext()
        theirs = torch.compiler.config.dynamic_sources
        return torch.compiler.config.patch(dynamic_sources=f"{theirs},{ours}" if theirs else ours)

    def _eligible(self, name: str, linear: nn.Linear) -> bool:
        reason = self.config.linear_exclusion_reason(name, linear.in_features, linear.weight.dtype,
                                                     self.backend.num_blocks)
        return reason is None

    def restore(self) -> nn.Module:
        """Undo the eager-fallback forwards installed on the model's linears; return the model."""
        eager_fallback.uninstall(self._eager_handles)
        self._eager_handles = []
        return self.model

    def report(self) -> Report:
        """What was quantized, fused and left out, over every graph captured so far."""
        return report(self)


def compile(model: nn.Module, config: Config | None = None, **overrides) -> NVFP4Module:
    """Compile ``model`` so every eligible GEMM runs in NVFP4 (W4A4, NVFP4_SPEC.md).

    Args:
        model: any ``nn.Module``; it is not modified (weights are quantized into the graphs).
        config: a :class:`Config`; keyword ``overrides`` replace its fields
            (``nvfp4.compile(model, exclude=("proj_out",))``).

    Returns:
        An :class:`NVFP4Module`. Capture happens on the first call, per input shape.

    Raises ``torch._dynamo.config.recompile_limit`` to at least :data:`RECOMPILE_LIMIT`, so that
    many models of one class can be compiled in one process (see there). As with
    ``torch.compile``, Dynamo's cache keeps a compiled model alive until ``torch._dynamo.reset()``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    config = config or Config()
    if overrides:
        config = Config(**{**_config_fields(config), **overrides})
    return NVFP4Module(model, config)


def report(compiled: NVFP4Module) -> Report:
    """The :class:`Report` of a compiled model (call the model at least once first)."""
    if not isinstance(compiled, NVFP4Module):
        raise TypeError(f"compiled: expected the result of nvfp4.compile, got {type(compiled).__name__}")
    graphs = compiled.backend.graphs
    sites = latest_per_name((s for g in graphs for s in g.context.sites), key=lambda s: s.name)
    seen = {s.name for s in sites}
    boundaries = latest_per_name((b for g in graphs for b in g.context.boundaries), key=lambda b: b.producer)
    eager = sorted(compiled.eager_linears - seen)
    uncaptured = [n for n in _linear_names(compiled.model) if n not in seen and n not in eager] if graphs else []
    distinct_graphs = len({_graph_signature(g.graph_module) for g in graphs})
    # a converted attention once per cache; any other once per node name and reason (graphs
    # recompiled for new shapes or values list their attention calls again)
    attention = latest_per_name((a for g in graphs for a in g.context.attention_sites),
                                key=lambda a: a.k_buffer or (a.node, a.reason))
    return Report(sites, boundaries, distinct_graphs, len(graphs), uncaptured, eager, _config_fields(compiled.config),
                  attention, [g.context.inductor for g in graphs])


def calibrate(compiled: NVFP4Module, batches: Iterable, *, progress: bool = True) -> dict[str, float]:
    """Record static activation amax values by running ``batches`` through a compiled model.

    Needs ``Config(activation_scales="static")``. Each batch is a tuple of positional arguments
    or a dict of keyword arguments. The per-tensor amax of every quantized activation becomes
    the max |x| seen over all batches. Returns {buffer name: amax}.
    """
    if compiled.config.activation_scales != "static":
        raise ValueError("compiled: calibrate needs a model compiled with activation_scales='static'")
    batches = list(batches)
    if not batches:
        raise ValueError("batches: expected at least one batch")
    with torch.no_grad(), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("calibrating", total=len(batches))
        for batch in batches:
            args, kwargs = (batch, {}) if isinstance(batch, (tuple, list)) else ((), batch)
            compiled.backend.calibrating = True
            try:
                compiled(*args, **kwargs)
            finally:
                compiled.backend.calibrating = False
            bar.advance(task)
    return {
        f"graph{i}.{name}": float(buf)
        for i, g in enumerate(compiled.backend.graphs)
        for name, buf in g.graph_module.named_buffers()
        if name.startswith(STATIC_AMAX_PREFIX)
    }


def input_amax_by_module(compiled: NVFP4Module) -> dict[str, float]:
    """Calibrated activation amax per quantized linear (module name -> amax), from the static-scale
    buffers of a model compiled with ``activation_scales="static"`` and run through :func:`calibrate`."""
    amax: dict[str, float] = {}
    for captured in compiled.backend.graphs:
        gm = captured.graph_module
        for node in gm.graph.nodes:
            source = static_amax_node(node)
            if source is not None:
                value = float(getattr(gm, source.target))
                if value == value:  # NaN: never calibrated
                    for module in node.meta.get("nvfp4_input_of", []):
                        amax[module] = max(value, amax.get(module, 0.0))
    return amax


def _config_fields(config: Config) -> dict:
    return {k: v for k, v in asdict(config).items() if not k.startswith("_")}


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _graph_signature(gm: fx.GraphModule) -> str:
    """Graphs recompiled for new shapes have the same code: count them once."""
    return "\n".join(str(n.target) for n in gm.graph.nodes if n.op == "call_function" and n.target is not ops.QUANTIZE)


def _capture_message(model: nn.Module, err: Exception) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return (
        f"{type(model).__name__} cannot be captured as one graph (Config.fullgraph=True): "
        + " | ".join(lines[:8])
    )
