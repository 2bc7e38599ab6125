"""A `package.module:factory` target for CLI tests."""

import torch
from torch import nn


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(approximate="tanh"), nn.Linear(64, 20), nn.Linear(20, 16))


def example_inputs(model):
    return (torch.randn(4, 32),)


def broken() -> nn.Module:
    raise RuntimeError("weights not found")


def not_a_module():
    return 42
