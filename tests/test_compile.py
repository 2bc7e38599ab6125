"""nvfp4.compile on the embedded video DiT: the rewrite is checked against an independent eager twin."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nvfp4_compiler as nvfp4
from nvfp4_compiler import ops
from nvfp4_compiler.models import CONFIGS, build_model, example_inputs
from qdq import linear_names, qdq_twin, rel_err

# fp32 model: the compiled graph and the QDQ twin differ only in accumulation order and in the
# epilogue rounding once instead of per op.
FP32_TOL = 2e-5


def _tiny():
    model = build_model("tiny").eval()
    return model, example_inputs(model.cfg)


@torch.no_grad()
def test_compiled_tiny_equals_qdq_twin():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model)
    out = compiled(*inputs)
    twin = qdq_twin(model, linear_names(model))
    assert rel_err(out, twin(*inputs)) < FP32_TOL
    # ... and is really quantized: far from the fp32 model
    assert rel_err(out, model(*inputs)) > 1e-2


@torch.no_grad()
def test_four_over_six_compiles_to_its_qdq_twin():
    """Config.four_over_six reaches the activation quantize ops and the weight cache: the compiled
    model equals the QDQ twin with Four Over Six scales, and not the one with the spec's."""
    model, inputs = _tiny()
    out = nvfp4.compile(model, four_over_six=True)(*inputs)
    names = linear_names(model)
    assert rel_err(out, qdq_twin(model, names, four_over_six=True)(*inputs)) < FP32_TOL
    assert rel_err(out, qdq_twin(model, names)(*inputs)) > 10 * FP32_TOL


@torch.no_grad()
def test_unfused_pipeline_gives_the_same_function():
    model, inputs = _tiny()
    fused = nvfp4.compile(model)(*inputs)
    torch._dynamo.reset()
    unfused = nvfp4.compile(model, fuse_epilogues=False)(*inputs)
    assert rel_err(fused, unfused) < FP32_TOL


@torch.no_grad()
def test_report_counts_every_eligible_linear_and_fusions():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model)
    compiled(*inputs)
    report = nvfp4.report(compiled)
    assert len(report.quantized) == len(linear_names(model)) == 27
    assert not report.kept and not report.uncaptured_linears
    by_name = {g.name: g for g in report.gemms}
    assert by_name["blocks.0.ffn.up"].epilogue == ["bias", "gelu_tanh", "next-scale amax"]
    assert by_name["blocks.0.ffn.down"].epilogue == ["bias", "gate", "residual"]
    assert by_name["blocks.0.cross_attn.to_out"].epilogue == ["bias", "residual"]
    assert "producing GEMM" in by_name["blocks.0.ffn.down"].input_scale
    before, after = report.weight_bytes()
    assert 3.4 < (before / 2) / after < 3.6  # fp32 model: 7.1x; 3.55x against the same weights in bf16
    summary = report.to_dict()["summary"]
    assert summary["boundary_bytes"] == sum(b.nbytes for b in report.boundaries) > 0
    assert {b.producer for b in report.boundaries} == set(by_name)


@torch.no_grad()
def test_graph_holds_nvfp4_ops_and_shares_quantized_inputs():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model)
    compiled(*inputs)
    gm = compiled.backend.graphs[0].graph_module
    code = gm.code
    assert "torch._C._nn.linear" not in code and "nvfp4.gemm" in code
    gemms = [n for n in gm.graph.nodes if n.target is ops.GEMM]
    quants = [n for n in gm.graph.nodes if n.target is ops.QUANTIZE]
    assert len(gemms) == 27
    # q, k, v of a self-attention read the same normalized input: it is quantized once.
    to_q_k_v_inputs = {g.args[0].args[0] for g in gemms if "self_attn" in str(g.meta.get("nvfp4_weight_placeholder"))
                       and any(s in g.meta["nvfp4_weight_placeholder"] for s in ("to_q", "to_k", "to_v"))}
    assert len(to_q_k_v_inputs) == 2  # one per block
    assert len(quants) < len(gemms)


@torch.no_grad()
def test_same_shape_does_not_recompile_new_shape_does():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model)
    compiled(*inputs)
    compiled(*inputs)
    assert len(compiled.backend.graphs) == 1
    more_frames = example_inputs(model.cfg, frames=4)
    out = compiled(*more_frames)
    assert len(compiled.backend.graphs) == 2
    assert rel_err(out, qdq_twin(model, linear_names(model))(*more_frames)) < FP32_TOL
    compiled(*more_frames)
    assert len(compiled.backend.graphs) == 2
    report = compiled.report()
    assert report.compilations == 2 and report.graphs == 1 and len(report.gemms) == 27


@torch.no_grad()
def test_chunk_with_context_compiles():
    model, (x, t, txt) = _tiny()
    context = torch.randn_like(x)
    compiled = nvfp4.compile(model)
    out = compiled(x, t, txt, context=context, frame_offset=2)
    twin = qdq_twin(model, linear_names(model))
    assert rel_err(out, twin(x, t, txt, context=context, frame_offset=2)) < FP32_TOL


@torch.no_grad()
def test_exclusions_and_bf16_blocks_are_reported_with_reasons():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model, exclude=("proj_out", "time_*"), keep_last_blocks_bf16=1)
    out = compiled(*inputs)
    report = compiled.report()
    kept = {g.name: g.reason for g in report.kept}
    assert kept["proj_out"] == "excluded by pattern 'proj_out'"
    assert kept["time_proj"].startswith("excluded by pattern 'time_*'")
    assert all("among the last 1" in kept[n] for n in kept if n.startswith("blocks.1."))
    assert not any(n.startswith("blocks.0.") for n in kept)
    quantized = [g.name for g in report.quantized]
    assert rel_err(out, qdq_twin(model, quantized)(*inputs)) < FP32_TOL


class OddWidths(nn.Module):
    """A linear with K = 20 (not a multiple of 16) between two eligible ones."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 20)
        self.b = nn.Linear(20, 48)
        self.c = nn.Linear(48, 16)

    def forward(self, x):
        return self.c(F.silu(self.b(self.a(x))))


@torch.no_grad()
def test_non_multiple_of_16_layers_stay_bf16_with_reason():
    model = OddWidths()
    x = torch.randn(4, 32)
    compiled = nvfp4.compile(model)
    out = compiled(x)
    report = compiled.report()
    assert [g.name for g in report.kept] == ["b"]
    assert report.kept[0].reason == "K=20 is not a multiple of 16 (Config.pad_k=False)"
    assert rel_err(out, qdq_twin(model, ["a", "c"])(x)) < FP32_TOL
    torch._dynamo.reset()
    padded = nvfp4.compile(model, pad_k=True)
    out_padded = padded(x)
    assert len(padded.report().quantized) == 3
    assert rel_err(out_padded, qdq_twin(model, ["a", "b", "c"])(x)) < FP32_TOL


class DataDependentBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 32)
        self.b = nn.Linear(32, 32)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent: TorchDynamo breaks the graph here
            h = h * 2
        return self.b(h)


@torch.no_grad()
def test_graph_break_is_survived_and_both_sides_quantized():
    model = DataDependentBranch()
    x = torch.randn(8, 32)
    compiled = nvfp4.compile(model)
    out = compiled(x)
    report = compiled.report()
    assert report.graphs >= 2
    assert sorted(g.name for g in report.quantized) == ["a", "b"]
    assert rel_err(out, qdq_twin(model, ["a", "b"])(x)) < FP32_TOL


@torch.no_grad()
def test_fullgraph_capture_failure_names_where_and_why():
    compiled = nvfp4.compile(DataDependentBranch(), fullgraph=True)
    with pytest.raises(nvfp4.CaptureError) as info:
        compiled(torch.randn(8, 32))
    message = str(info.value)
    assert "DataDependentBranch" in message and "test_compile.py" in message


def test_export_failure_names_the_model():
    with pytest.raises(nvfp4.CaptureError, match="DataDependentBranch"):
        nvfp4.export_graph(DataDependentBranch(), (torch.randn(8, 32),))


def test_training_mode_module_compiles_and_runs_forward():
    model, inputs = _tiny()
    model.train()
    compiled = nvfp4.compile(model)
    with torch.no_grad():
        out = compiled(*inputs)
    assert torch.isfinite(out).all()
    assert len(compiled.report().quantized) == 27


@torch.no_grad()
def test_changed_weights_are_requantized():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model)
    compiled(*inputs)
    model.proj_out.weight.mul_(0.5)  # in place, as an optimizer step or load_state_dict would
    out = compiled(*inputs)
    assert rel_err(out, qdq_twin(model, linear_names(model))(*inputs)) < FP32_TOL


@torch.no_grad()
def test_static_scales_need_calibration_then_match_recorded_amax():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model, activation_scales="static")
    with pytest.raises(ValueError, match="calibrat"):
        nvfp4.calibrate(nvfp4.compile(model), [inputs])  # dynamic model: nothing to calibrate
    amax = nvfp4.calibrate(compiled, [inputs, example_inputs(model.cfg, seed=1)], progress=False)
    assert amax and all(v > 0 for v in amax.values())
    out = compiled(*inputs)
    dynamic = nvfp4.compile(model)(*inputs)
    # Static scales are at least the dynamic ones: close to, but not the same as, dynamic quantization.
    assert 0 < rel_err(out, dynamic) < 0.3


@torch.no_grad()
def test_static_scales_let_the_producing_gemm_write_the_next_operand():
    """With static scales a GEMM whose output only feeds the next GEMM's quantize writes that NVFP4
    operand itself (nvfp4.gemm_quantize): the bf16 tensor between them is gone from the graph and
    from the envelope's boundaries, and the model computes what the unfused graph computes."""
    model, inputs = _tiny()
    batches = [inputs, example_inputs(model.cfg, seed=1)]
    fused = nvfp4.compile(model, activation_scales="static")
    amax = nvfp4.calibrate(fused, batches, progress=False)
    out = fused(*inputs)
    torch._dynamo.reset()
    unfused = nvfp4.compile(model, activation_scales="static", fuse_epilogues=False)
    unfused_amax = nvfp4.calibrate(unfused, batches, progress=False)
    assert rel_err(out, unfused(*inputs)) < FP32_TOL
    assert sorted(amax.values()) == pytest.approx(sorted(unfused_amax.values()), rel=1e-5)

    report = nvfp4.report(fused)
    by_name = {g.name: g for g in report.gemms}
    assert by_name["blocks.0.ffn.up"].epilogue == ["bias", "gelu_tanh", "NVFP4 output (static scale)"]
    assert by_name["blocks.0.ffn.down"].input_scale == "static, quantized in the producing GEMM's epilogue"
    assert "blocks.0.ffn.up" not in {b.producer for b in report.boundaries}
    assert "blocks.0.ffn.down" in nvfp4.api.input_amax_by_module(fused)
    graph_ops = [n.target for g in fused.backend.graphs for n in g.graph_module.graph.nodes]
    fused_sites = sum("NVFP4 output (static scale)" in g.epilogue for g in report.gemms)
    assert graph_ops.count(ops.GEMM_QUANTIZE) == fused_sites >= 2


@torch.no_grad()
def test_four_over_six_with_static_scales_keeps_its_own_quantize():
    """The GEMMs' quantizing epilogues use the spec's block scales only, so with Four Over Six the
    activation quantize stays a separate op; calibrated on the one input it then sees, the model
    equals the Four Over Six QDQ twin."""
    model, inputs = _tiny()
    compiled = nvfp4.compile(model, activation_scales="static", four_over_six=True)
    nvfp4.calibrate(compiled, [inputs], progress=False)
    out = compiled(*inputs)
    graph_ops = [n.target for g in compiled.backend.graphs for n in g.graph_module.graph.nodes]
    assert ops.GEMM_QUANTIZE not in graph_ops and ops.QUANTIZE in graph_ops
    assert rel_err(out, qdq_twin(model, linear_names(model), four_over_six=True)(*inputs)) < FP32_TOL


@torch.no_grad()
def test_uncalibrated_static_scales_fail_loudly():
    model, inputs = _tiny()
    compiled = nvfp4.compile(model, activation_scales="static")
    with pytest.raises(ValueError, match="never calibrated; run nvfp4.calibrate"):
        compiled(*inputs)


def test_rewritten_ops_can_be_exported_and_compiled():
    class UsesOps(nn.Module):
        def forward(self, x, w):
            xd, xs, xg = ops.quantize(x, None, 1, "reference")
            wd, ws, wg = ops.quantize(w, None, 1, "reference")
            return ops.gemm(xd, xs, xg, wd, ws, wg, None, "silu", None, None, torch.float32, "reference")[0]

    x, w = torch.randn(8, 32), torch.randn(16, 32)
    program = torch.export.export(UsesOps(), (x, w))
    assert "nvfp4.gemm" in str(program.graph)
    expected = UsesOps()(x, w)
    assert torch.equal(program.module()(x, w), expected)
    assert torch.equal(torch.compile(UsesOps(), backend="aot_eager")(x, w), expected)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_all_configs_build(name):
    model = build_model(name, device="meta")
    params = sum(p.numel() for p in model.parameters())
    expected = {"tiny": (1e5, 2e5), "wan-1.3b": (1.3e9, 1.5e9), "wan-5b": (4.8e9, 5.2e9)}[name]
    assert expected[0] < params < expected[1]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="activation_scales"):
        nvfp4.Config(activation_scales="weekly")
    with pytest.raises(ValueError, match="backend"):
        nvfp4.Config(backend="cuda")
    with pytest.raises(ValueError, match="keep_last_blocks_bf16"):
        nvfp4.Config(keep_last_blocks_bf16=-1)
    with pytest.raises(TypeError, match="exclude"):
        nvfp4.Config(exclude="proj_out")
    with pytest.raises(ValueError, match="block_pattern"):
        nvfp4.Config(block_pattern="no groups")
    with pytest.raises(TypeError, match="model"):
        nvfp4.compile("not a model")


def test_capture_graphs_returns_the_unmodified_dynamo_graphs():
    graphs = nvfp4.capture_graphs(DataDependentBranch(), torch.randn(8, 32))
    assert len(graphs) >= 2
    code = "\n".join(g.code for g in graphs)
    assert code.count("torch._C._nn.linear") == 2 and "nvfp4" not in code


class _TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


@torch.no_grad()
def test_many_models_of_one_class_compiled_in_one_process_all_capture():
    """Dynamo's recompile limit counts the cache entries of a code object over every instance; an
    ablation sweep compiles one model after another (here 6 models x 2 shapes = 12 entries, past
    the default limit of 8), and each must still be captured, not fall back to eager."""
    torch.manual_seed(0)
    for _ in range(6):
        model = _TwoLinears()
        compiled = nvfp4.compile(model, backend="reference")
        for rows in (3, 5):
            x = torch.randn(rows, 32)  # each model's own weights: no graph of an earlier model reused
            assert rel_err(compiled(x), qdq_twin(model, linear_names(model))(x)) < FP32_TOL
        assert len(compiled.report().quantized) == 2
