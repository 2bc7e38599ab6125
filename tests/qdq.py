"""An independent eager twin of a compiled model: every quantized linear becomes
``F.linear(dequantize(quantize(x)), dequantize(quantize(W)), b)`` with the same modules."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

import nvfp4_compiler as nvfp4


class QDQLinear(nn.Module):
    def __init__(self, linear: nn.Linear, four_over_six: bool = False):
        super().__init__()
        self.weight, self.bias, self.four_over_six = linear.weight, linear.bias, four_over_six

    def forward(self, x):
        x_hat = nvfp4.quantize(x, four_over_six=self.four_over_six).dequantize(x.dtype)
        w_hat = nvfp4.quantize(self.weight, four_over_six=self.four_over_six).dequantize(self.weight.dtype)
        return F.linear(x_hat, w_hat, self.bias)


def linear_names(model: nn.Module) -> list[str]:
    """Names of every ``nn.Linear`` of ``model`` (the tiny model quantizes all of them)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def qdq_twin(model: nn.Module, quantized_names, four_over_six: bool = False) -> nn.Module:
    """A deep copy of ``model`` with the named linears replaced by QDQLinear (Four Over Six block
    scales with ``four_over_six``)."""
    twin = copy.deepcopy(model)
    for name in quantized_names:
        parent_name, _, child = name.rpartition(".")
        parent = twin.get_submodule(parent_name) if parent_name else twin
        setattr(parent, child, QDQLinear(getattr(parent, child), four_over_six))
    return twin


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())
