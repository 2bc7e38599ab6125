"""Rewritten graphs handed to Inductor: same function as the graph run as captured, weights
still re-bound per call (not baked in), and graphs Inductor must not take are left alone."""

import copy
import operator
import os

import pytest
import torch
import torch.fx as fx
from qdq import linear_names, qdq_twin, rel_err
from saved_bytes import saved_activation_bytes
from torch import nn

import nvfp4_compiler as nvfp4
from nvfp4_compiler import inductor
from nvfp4_compiler.models import build_model, example_inputs

FP32_TOL = 2e-5  # as test_compile: accumulation order and epilogue rounding only
# With NVFP4_TEST_ON_GPU=1 the model tests run on the GPU (Triton kernels inside Inductor's code).
DEVICE = torch.device("cuda" if os.environ.get("NVFP4_TEST_ON_GPU") == "1" else "cpu")


@torch.no_grad()
def test_inductor_graph_equals_qdq_twin_and_follows_weight_changes():
    model = build_model("tiny", device=DEVICE).eval()
    inputs = example_inputs(model.cfg, device=DEVICE)
    compiled = nvfp4.compile(model, inductor=True)
    out = compiled(*inputs)
    assert compiled.report().inductor == ["on"]
    assert rel_err(out, qdq_twin(model, linear_names(model))(*inputs)) < FP32_TOL
    # The NVFP4 weights are graph inputs of the Inductor code: an in-place change is re-quantized
    # and used (a graph with the weights baked in would keep computing the old function).
    model.proj_out.weight.mul_(0.5)
    model.blocks[0].ffn.up.weight.mul_(-1.0)
    out = compiled(*inputs)
    assert rel_err(out, qdq_twin(model, linear_names(model))(*inputs)) < FP32_TOL


@torch.no_grad()
def test_inductor_failure_warns_and_runs_the_graph_as_captured(monkeypatch):
    import torch._inductor.compile_fx as compile_fx_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(compile_fx_module, "compile_fx", broken)
    model = build_model("tiny").eval()
    inputs = example_inputs(model.cfg)
    compiled = nvfp4.compile(model, inductor=True)
    with pytest.warns(UserWarning, match="Inductor failed"):
        out = compiled(*inputs)
    assert compiled.report().inductor == ["off: Inductor failed (RuntimeError: boom)"]
    assert rel_err(out, qdq_twin(model, linear_names(model))(*inputs)) < FP32_TOL


@torch.no_grad()
def test_static_scales_calibrated_through_inductor():
    """Calibration writes the amax buffers in place; the compiled code reads them as inputs (those
    of the quantizing GEMM epilogues, nvfp4::gemm_quantize, too)."""
    model = build_model("tiny").eval()
    batches = [example_inputs(model.cfg, seed=s) for s in range(2)]
    outs = {}
    for use_inductor in (False, True):
        torch._dynamo.reset()
        compiled = nvfp4.compile(model, activation_scales="static", inductor=use_inductor)
        nvfp4.calibrate(compiled, batches, progress=False)
        outs[use_inductor] = compiled(*batches[0])
    assert compiled.report().inductor == ["on"]
    assert any("NVFP4 output (static scale)" in g.epilogue for g in compiled.report().quantized)
    assert rel_err(outs[True], outs[False]) < FP32_TOL


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


def test_compiled_graph_drops_unused_inputs():
    """Inputs nothing reads (the bf16 weights of rewritten linears) are not passed to Inductor's
    code, so CUDA-graph replays do not copy them."""
    graph = fx.Graph()
    x, _unused, y = graph.placeholder("x"), graph.placeholder("unused_weight"), graph.placeholder("y")
    graph.output((graph.call_function(torch.add, (x, y)),))
    gm = fx.GraphModule(nn.Module(), graph)
    args = (torch.ones(3), torch.full((3,), 7.0), torch.arange(3.0))
    compiled, note = inductor.compile_graph(gm, list(args))
    assert note == "on" and compiled.used == [0, 2]
    assert torch.equal(compiled(gm, args)[0], args[0] + args[2])


def _graph_calling(target) -> fx.GraphModule:
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output((graph.call_function(target, (x, x)),))
    return fx.GraphModule(nn.Module(), graph)


def test_should_compile_leaves_kv_runtime_and_cpu_default_alone():
    from nvfp4_compiler.kv_runtime import cached_attention

    x = torch.ones(2)
    use, why = inductor.should_compile(_graph_calling(cached_attention), True, [x])
    assert not use and "cached_attention" in why
    use, why = inductor.should_compile(_graph_calling(operator.add), None, [x])
    assert not use and "CUDA devices" in why
    assert inductor.should_compile(_graph_calling(operator.add), True, [x]) == (True, "on")
    assert not inductor.should_compile(_graph_calling(operator.add), False, [x])[0]


def test_cuda_graphs_need_inductor():
    with pytest.raises(ValueError, match="cuda_graphs"):
        nvfp4.Config(inductor=False, cuda_graphs=True)
    with pytest.raises(ValueError, match="inductor"):
        nvfp4.Config(inductor="yes")


def test_training_graph_through_inductor_matches_captured_and_saves_less():
    model = build_model("tiny", seed=0, device=DEVICE).train()
    inputs = example_inputs(model.cfg, device=DEVICE)
    results = {}
    for use_inductor in (False, True):
        torch._dynamo.reset()
        twin = copy.deepcopy(model)
        # Stochastic rounding off: its draws are taken in backward-execution order, which the
        # compiled backward does not promise to keep; everything else must agree.
        trained = nvfp4.compile(twin, inductor=use_inductor, stochastic_gradients=False)
        trained(*inputs).square().mean().backward()  # capture and compile
        grads = [p.grad.clone() for p in twin.parameters()]
        twin.zero_grad()
        results[use_inductor] = (grads, saved_activation_bytes(trained, inputs, twin.parameters()), trained.report())
    (captured, captured_bytes, _), (fused, fused_bytes, report) = results[False], results[True]
    assert report.inductor == ["on"] and len(report.quantized) == 27
    for a, b in zip(captured, fused):
        assert rel_err(b, a) < 1e-4
    assert fused_bytes < 0.95 * captured_bytes


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a CUDA device (runs with NVFP4_TEST_ON_GPU=1)")
def test_cuda_graph_training_replays_fresh_stochastic_rounding():
    """Seeds are drawn on the GPU inside the op: each replay of the recorded backward rounds
    with new draws (a host-drawn seed would be frozen into the graph and bias every step)."""
    torch.manual_seed(0)
    layer = nn.Linear(256, 256, device=DEVICE)
    x = torch.randn(512, 256, device=DEVICE)
    grads = {}
    for sr in (False, True):
        torch._dynamo.reset()
        trained = nvfp4.compile(layer, cuda_graphs=True, stochastic_gradients=sr)
        steps = []
        for _ in range(5):  # the first calls warm up and record; later ones replay
            layer.zero_grad(set_to_none=True)
            trained(x).square().mean().backward()
            steps.append(layer.weight.grad.clone())
        assert trained.report().inductor == ["on (CUDA graphs)"]
        grads[sr] = steps
    assert all(torch.equal(g, grads[False][0]) for g in grads[False][1:])
    assert not torch.equal(grads[True][-1], grads[True][-2])
    assert (grads[True][-1] - grads[False][-1]).norm() < 0.2 * grads[False][-1].norm()
