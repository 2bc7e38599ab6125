"""ONNX export: FLOAT4E2M1 weights behind two chained DequantizeLinear nodes, activations
quantized as the compiled graph does; checked by onnx.checker and run by onnx's reference evaluator."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator
from typer.testing import CliRunner

import nvfp4_compiler as nvfp4
from nvfp4_compiler.cli import app
from nvfp4_compiler.models import build_model, example_inputs
from nvfp4_compiler.onnx_export import activation_qdq, to_onnx


@pytest.fixture(scope="module")
def exported():
    model = build_model("tiny").eval()
    inputs = example_inputs(model.cfg)
    return model, inputs, to_onnx(model, inputs, nvfp4.Config(exclude=("proj_out",)))


@pytest.mark.parametrize("seed", range(40))
def test_activation_qdq_is_bit_identical_to_the_format(seed):
    """Many draws: S_enc computed as reciprocal(amax) x 2688 was 1 ulp off for about one in five."""
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(seed)) * torch.logspace(-3, 3, 64)
    assert torch.equal(activation_qdq(x), nvfp4.quantize(x).dequantize())


def test_weights_are_fp4_initializers_behind_two_dequantize_linear(exported):
    _, _, proto = exported
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 23
    fp4 = {i.name: i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT4E2M1}
    assert len(fp4) == 26  # 27 linears, proj_out excluded
    producers = {out: n for n in proto.graph.node for out in n.output}
    for name in fp4:
        dq_weight = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == name)
        attrs = {a.name: a.i for a in dq_weight.attribute}
        assert attrs == {"axis": 1, "block_size": 16}
        dq_scale = producers[dq_weight.input[1]]
        assert dq_scale.op_type == "DequantizeLinear"
        scale = next(i for i in proto.graph.initializer if i.name == dq_scale.input[0])
        assert scale.data_type == TensorProto.FLOAT8E4M3FN


def test_onnx_outputs_equal_the_compiled_model(exported):
    model, inputs, proto = exported
    names = [i.name for i in proto.graph.input]
    out = ReferenceEvaluator(proto).run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    with torch.no_grad():
        expected = nvfp4.compile(model, exclude=("proj_out",))(*inputs).numpy()
    assert np.linalg.norm(out - expected) / np.linalg.norm(expected) < 1e-5


def test_cli_export_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    path = tmp_path / "tiny.onnx"
    result = runner.invoke(app, ["export", "tiny", "--onnx", str(path)])
    assert result.exit_code == 0, result.output
    assert "27 FLOAT4E2M1 weights" in result.stdout
    onnx.checker.check_model(onnx.load(str(path)))
    again = runner.invoke(app, ["export", "tiny", "--onnx", str(path)])
    assert again.exit_code == 2 and "already exists" in again.stderr
