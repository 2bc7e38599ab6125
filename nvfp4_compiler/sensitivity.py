"""Which linears cost a model the most accuracy in NVFP4, and which to keep in bf16.

NVIDIA's recipe keeps about 15% of the linear layers in bf16, "mostly at the end" of its LLMs.
Which ones matter is a property of the model: in the embedded video DiT the first block's FFN up
projection alone carries about half of the NVFP4 forward's loss increase (benchmarks/RESULTS.md).
So measure it:

    sens = nvfp4.sensitivity.layer_sensitivity(model, evaluate)   # evaluate(model) -> loss
    print(sens.table())
    keep = sens.choose(budget=0.15)                               # <= 15% of the quantized FLOPs
    compiled = nvfp4.compile(model, exclude=tuple(keep))

Each candidate linear is measured by keeping it alone in full precision while every other
candidate runs NVFP4 (leave-one-out): the loss it gives back is its sensitivity. Quantization is
simulated in place (``fake_quantized``: the reference quantize-dequantize of the input and the
weight, the values the NVFP4 inference graph computes) so no model is compiled per candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import Progress
from rich.table import Table
from torch import nn

from .checkpoint import plan
from .config import Config
from .format import quantize


def quantizable_linears(model: nn.Module, config: Config | None = None) -> list[str]:
    """Names of the ``nn.Linear`` modules that ``nvfp4.compile(model, config)`` would quantize
    (its include/exclude globs, kept blocks and the K % 16 rule), in module order."""
    return plan(model, config or Config()).quantized


def _fake_quantized_forward(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """F.linear of the NVFP4 round trips (1x16 blocks) of the input and of the weight; the weight's
    is computed once, so this is only valid while the weight does not change."""
    weight = quantize(linear.weight.detach()).dequantize(linear.weight.dtype)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(quantize(x).dequantize(x.dtype), weight, linear.bias)

    return forward


def _fake_quantized_forwards(model: nn.Module, names: Iterable[str]) -> dict[str, Callable]:
    forwards = {}
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise TypeError(f"names: {name!r} is a {type(module).__name__}, expected an nn.Linear")
        forwards[name] = _fake_quantized_forward(module)
    return forwards


@contextmanager
def _patched(model: nn.Module, forwards: dict[str, Callable]):
    """The named modules run ``forwards[name]`` inside the block (the instance attribute shadows
    the class's forward); restored on exit, also after an exception."""
    modules = [model.get_submodule(name) for name in forwards]
    try:
        for module, forward in zip(modules, forwards.values()):
            module.forward = forward
        yield model
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)


def fake_quantized(model: nn.Module, names: Iterable[str]):
    """Inside the block (``with fake_quantized(model, names):``), the named linears of ``model``
    compute what their NVFP4 inference GEMMs compute (inputs and weights through the reference
    quantize-dequantize); restored on exit, also after an exception. For evaluation: weights must
    not change inside the block."""
    return _patched(model, _fake_quantized_forwards(model, names))


def _linear_flops(model: nn.Module, names: list[str], evaluate: Callable[[nn.Module], float]) -> tuple[float, dict]:
    """evaluate(model) in full precision, and 2 x M x K x N of each named linear over that call."""
    flops = dict.fromkeys(names, 0.0)

    def count(name):
        def hook(module, inputs, output):
            flops[name] += 2.0 * inputs[0].numel() * module.out_features
        return hook

    handles = [model.get_submodule(n).register_forward_hook(count(n)) for n in names]
    try:
        value = evaluate(model)
    finally:
        for h in handles:
            h.remove()
    return value, flops


@dataclass
class Sensitivity:
    """Leave-one-out sensitivities of a model's NVFP4 linears (see the module docstring).

    Attributes:
        full_precision: evaluate() with nothing quantized.
        all_quantized: evaluate() with every candidate in NVFP4.
        kept: per candidate, evaluate() with every other candidate in NVFP4.
        flops: per candidate, its share of the candidates' GEMM FLOPs in one evaluate() call.
    """

    full_precision: float
    all_quantized: float
    kept: dict[str, float]
    flops: dict[str, float]

    def gain(self, name: str) -> float:
        """How much of the loss increase keeping ``name`` alone in full precision gives back."""
        return self.all_quantized - self.kept[name]

    def ranked(self) -> list[str]:
        """Candidates, most sensitive first."""
        return sorted(self.kept, key=self.gain, reverse=True)

    def choose(self, budget: float = 0.15) -> list[str]:
        """Linears to keep in bf16: the most sensitive first (positive gains only), each one taken
        if the FLOPs kept so far plus its own stay within ``budget`` (a fraction of all the
        candidates' FLOPs). Gains are measured one at a time; the loss of the chosen set together
        is for the caller to measure (``fake_quantized``)."""
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"budget: expected a fraction of the quantized FLOPs in [0, 1], got {budget}")
        chosen, spent = [], 0.0
        for name in self.ranked():
            if self.gain(name) > 0 and spent + self.flops[name] <= budget + 1e-12:
                chosen.append(name)
                spent += self.flops[name]
        return chosen

    def table(self, top: int = 15) -> Table:
        """A rich table of the ``top`` most sensitive linears."""
        increase = self.all_quantized - self.full_precision
        table = Table(title=f"NVFP4 sensitivity: all quantized {self.all_quantized:.5g}, "
                            f"full precision {self.full_precision:.5g}")
        for column in ("linear", "kept alone in bf16", "gain", "share of the increase", "FLOPs share"):
            first = column == "linear"
            table.add_column(column, justify="left" if first else "right", no_wrap=first)
        for name in self.ranked()[:top]:
            share = self.gain(name) / increase if increase else float("nan")
            table.add_row(name, f"{self.kept[name]:.5g}", f"{self.gain(name):.3g}", f"{share:.1%}",
                          f"{self.flops[name]:.1%}")
        return table

    def to_dict(self) -> dict:
        return {"full_precision": self.full_precision, "all_quantized": self.all_quantized,
                "kept": self.kept, "flops_share": self.flops, "ranked": self.ranked()}


def layer_sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float], candidates: Iterable[str] | None = None,
                      *, config: Config | None = None, progress: bool = True) -> Sensitivity:
    """Measure each candidate linear's sensitivity to NVFP4 (leave-one-out; module docstring).

    Args:
        model: the full-precision model (left unchanged).
        evaluate: ``evaluate(model) -> float``, lower is better (e.g. a validation loss); it is
            called ``len(candidates) + 2`` times, under ``torch.no_grad()``.
        candidates: linear names to measure; default those ``nvfp4.compile`` would quantize
            under ``config`` (``quantizable_linears``).
        config: see ``candidates``.
        progress: a progress bar over the candidates.
    """
    names = list(candidates) if candidates is not None else quantizable_linears(model, config)
    if not names:
        raise ValueError("candidates: no linear to measure (none is quantized under this config)")
    with torch.no_grad():
        full, flops = _linear_flops(model, names, evaluate)
        total = sum(flops.values()) or 1.0
        forwards = _fake_quantized_forwards(model, names)   # each weight quantized once for all runs
        with _patched(model, forwards):
            every = float(evaluate(model))
        kept = {}
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("sensitivity", total=len(names))
            for name in names:
                with _patched(model, {n: f for n, f in forwards.items() if n != name}):
                    kept[name] = float(evaluate(model))
                bar.advance(task)
    return Sensitivity(float(full), every, kept, {n: f / total for n, f in flops.items()})

