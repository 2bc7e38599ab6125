"""nvfp4.compile on a third-party video transformer: diffusers' Wan, small random config, unmodified."""

import diffusers  # a test dependency (setup.sh installs .[test])
import pytest
import torch
from qdq import qdq_twin, rel_err
from torch import nn

import nvfp4_compiler as nvfp4

FP32_TOL = 2e-5


def _small_wan():
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32,
    ).eval()
    inputs = (torch.randn(1, 4, 2, 8, 8), torch.tensor([500]), torch.randn(1, 8, 32))
    return model, inputs


def _linears(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _run(model, inputs):
    return model(*inputs, return_dict=False)[0]


def test_symbolic_trace_alone_fails_on_wan():
    model, _ = _small_wan()
    with pytest.raises((TypeError, torch.fx.proxy.TraceError)):  # RoPE's shape-dependent slicing
        torch.fx.symbolic_trace(model)


@torch.no_grad()
def test_wan_compiles_and_equals_qdq_twin():
    model, inputs = _small_wan()
    compiled = nvfp4.compile(model)
    out = _run(compiled, inputs)
    report = compiled.report()
    eligible = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.in_features % 16 == 0]
    assert len(report.quantized) == len(eligible) == len(_linears(model))
    assert rel_err(out, _run(qdq_twin(model, eligible), inputs)) < FP32_TOL
    ffn = {g.name: g for g in report.gemms}["blocks.0.ffn.net.0.proj"]
    assert "gelu_tanh" in ffn.epilogue


class OverflowCheck(nn.Module):
    """Wraps a block with a data-dependent check: TorchDynamo breaks the graph there."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, hidden_states, *args, **kwargs):
        if hidden_states.abs().max() > 1e6:
            print("overflow")
        return self.inner(hidden_states, *args, **kwargs)


@torch.no_grad()
def test_wan_with_a_data_dependent_graph_break():
    model, inputs = _small_wan()
    model.blocks[1] = OverflowCheck(model.blocks[1])
    compiled = nvfp4.compile(model)
    out = _run(compiled, inputs)
    report = compiled.report()
    assert report.graphs >= 3
    assert len(report.quantized) == len(_linears(model)) and not report.uncaptured_linears
    assert rel_err(out, _run(qdq_twin(model, _linears(model)), inputs)) < FP32_TOL


@torch.no_grad()
def test_wan_with_a_dynamo_disabled_block_runs_it_through_the_eager_nvfp4_path():
    model, inputs = _small_wan()
    twin = qdq_twin(model, _linears(model))  # before compile patches anything
    for m in (model, twin):
        m.blocks[1].forward = torch._dynamo.disable(m.blocks[1].forward)
    compiled = nvfp4.compile(model)
    out = _run(compiled, inputs)
    report = compiled.report()
    block1 = [n for n in _linears(model) if n.startswith("blocks.1.")]
    assert sorted(report.eager_linears) == sorted(block1)
    assert len(report.quantized) + len(report.eager_linears) == len(_linears(model))
    assert rel_err(out, _run(twin, inputs)) < FP32_TOL
    assert rel_err(_run(model, inputs), _run(twin, inputs)) > 1e-2  # the original model is untouched


@torch.no_grad()
def test_wan_with_a_graph_break_in_a_hook_reuses_one_graph_per_block_with_each_blocks_weights():
    """After the break each block's forward is its own frame, and Dynamo reuses one compiled
    graph for every block: its NVFP4 weight slots must follow the parameters passed in."""
    model, inputs = _small_wan()
    twin = qdq_twin(model, _linears(model))
    model.blocks[1].register_forward_pre_hook(lambda module, args: torch._dynamo.graph_break())
    compiled = nvfp4.compile(model)
    out = _run(compiled, inputs)
    report = compiled.report()
    assert len(report.quantized) == len(_linears(model)) and not report.uncaptured_linears
    assert {g.name for g in report.quantized} == set(_linears(model))
    assert rel_err(out, _run(twin, inputs)) < FP32_TOL
