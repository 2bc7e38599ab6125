"""Rewritten graphs handed to Inductor: same function as the graph run as captured, weights
still re-bound per call (not baked in), and graphs Inductor must not take are left alone."""

import operator

import pytest
import torch
import torch.fx as fx
from torch import nn

import nvfp4_compiler as nvfp4
from nvfp4_compiler import inductor
from nvfp4_compiler.models import build_model, example_inputs
from qdq import qdq_twin, rel_err

FP32_TOL = 2e-5  # as test_compile: accumulation order and epilogue rounding only


def _linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def test_inductor_graph_equals_qdq_twin_and_follows_weight_changes():
    model = build_model("tiny").eval()
    inputs = example_inputs(model.cfg)
    compiled = nvfp4.compile(model, inductor=True)
    out = compiled(*inputs)
    assert compiled.report().inductor == ["on"]
    assert rel_err(out, qdq_twin(model, _linear_names(model))(*inputs)) < FP32_TOL
    # The NVFP4 weights are graph inputs of the Inductor code: an in-place change is re-quantized
    # and used (a graph with the weights baked in would keep computing the old function).
    model.proj_out.weight.mul_(0.5)
    model.blocks[0].ffn.up.weight.mul_(-1.0)
    out = compiled(*inputs)
    assert rel_err(out, qdq_twin(model, _linear_names(model))(*inputs)) < FP32_TOL


def test_lift_attributes_makes_buffers_inputs():
    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.tensor(3.0))

        def forward(self, x):
            return (x * self.scale + 1,)

    gm = fx.symbolic_trace(WithBuffer())
    names = inductor.lift_attributes(gm)
    assert names == ["scale"]
    assert not [n for n in gm.graph.nodes if n.op == "get_attr"]
    x = torch.arange(4.0)
    assert torch.equal(gm(x, torch.tensor(3.0))[0], x * 3 + 1)
    assert torch.equal(gm(x, torch.tensor(-2.0))[0], x * -2 + 1)  # the value passed, not the one traced


def _graph_calling(target) -> fx.GraphModule:
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output((graph.call_function(target, (x, x)),))
    return fx.GraphModule(nn.Module(), graph)


def test_should_compile_leaves_training_kv_and_cpu_default_alone():
    from nvfp4_compiler.training import nvfp4_linear_switches

    x = torch.ones(2)
    use, why = inductor.should_compile(_graph_calling(nvfp4_linear_switches), True, [x])
    assert not use and "nvfp4_linear_switches" in why
    use, why = inductor.should_compile(_graph_calling(operator.add), None, [x])
    assert not use and "CUDA" in why
    assert inductor.should_compile(_graph_calling(operator.add), True, [x]) == (True, "on")
    assert not inductor.should_compile(_graph_calling(operator.add), False, [x])[0]
    with torch.enable_grad():
        use, why = inductor.should_compile(_graph_calling(operator.add), True, [x.requires_grad_()])
    assert not use and "require grad" in why


def test_cuda_graphs_need_inductor():
    with pytest.raises(ValueError, match="cuda_graphs"):
        nvfp4.Config(inductor=False, cuda_graphs=True)
    with pytest.raises(ValueError, match="inductor"):
        nvfp4.Config(inductor="yes")
