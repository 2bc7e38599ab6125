"""nvfp4_compiler.sensitivity: fake-quantized linears equal the compiled NVFP4 inference graph, and
the leave-one-out ranking finds the linear that carries the error."""

import pytest
import torch
from torch import nn

import nvfp4_compiler as nvfp4
from nvfp4_compiler.models import build_model, example_inputs
from nvfp4_compiler.sensitivity import fake_quantized, layer_sensitivity, quantizable_linears


def test_fake_quantized_linears_compute_what_the_compiled_inference_graph_computes():
    model = build_model("tiny", seed=0).eval()
    inputs = example_inputs(model.cfg, seed=1)
    config = nvfp4.Config(exclude=("proj_out",), backend="reference")
    names = quantizable_linears(model, config)
    assert "proj_out" not in names and "blocks.0.ffn.up" in names
    with torch.no_grad():
        reference = model(*inputs)
        compiled = nvfp4.compile(model, config)(*inputs)
        with fake_quantized(model, names):
            simulated = model(*inputs)
        restored = model(*inputs)
    assert torch.equal(restored, reference)                       # forwards restored on exit
    assert (simulated - compiled).abs().max() <= 1e-5 * compiled.abs().max()
    assert (simulated - reference).abs().max() > 1e-3 * reference.abs().max()   # it did quantize


def test_fake_quantized_restores_the_model_after_an_error_and_checks_names():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    x = torch.randn(4, 16)
    expected = model(x)
    with pytest.raises(RuntimeError, match="boom"):
        with fake_quantized(model, ["0"]):
            raise RuntimeError("boom")
    assert torch.equal(model(x), expected)
    with pytest.raises(TypeError, match="names: '1' is a ReLU"):
        with fake_quantized(model, ["0", "1"]):
            pass
    assert torch.equal(model(x), expected)


class _TwoBranches(nn.Module):
    """out = loud(x) + quiet(x): loud's weights are 100x quiet's, so is its quantization error."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.loud, self.quiet, self.text = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
        with torch.no_grad():
            self.loud.weight.copy_(torch.randn(64, 64, generator=gen))
            self.quiet.weight.copy_(torch.randn(64, 64, generator=gen) * 0.01)
            self.text.weight.copy_(torch.randn(64, 64, generator=gen) * 0.01)

    def forward(self, x):
        return self.loud(x) + self.quiet(x) + self.text(x[:1]).mean()   # text: one row, few FLOPs


def test_layer_sensitivity_ranks_the_linear_that_carries_the_error_and_chooses_within_budget():
    model = _TwoBranches()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x)
    sens = layer_sensitivity(model, lambda m: float((m(x) - target).square().mean()), progress=False)
    assert sens.full_precision == 0.0 and sens.all_quantized > 0
    assert sens.ranked()[0] == "loud" and sens.gain("loud") > 0.9 * sens.all_quantized
    assert sens.flops["loud"] == sens.flops["quiet"] and sens.flops["text"] < 0.05
    assert abs(sum(sens.flops.values()) - 1.0) < 1e-9
    assert sens.choose(budget=0.5)[0] == "loud"
    assert "loud" not in sens.choose(budget=0.4)                  # 0.49 of the FLOPs does not fit
    assert set(sens.choose(budget=1.0)) == {n for n in sens.kept if sens.gain(n) > 0}
    with pytest.raises(ValueError, match="budget"):
        sens.choose(budget=15)
    with pytest.raises(ValueError, match="candidates"):
        layer_sensitivity(model, lambda m: 0.0, candidates=[], progress=False)
    assert "loud" in sens.to_dict()["ranked"] and sens.table().row_count == 3
