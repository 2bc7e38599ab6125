"""ONNX export (opset 23) of a model in the NVFP4 envelope.

Each quantized linear's weight becomes a FLOAT4E2M1 initializer [N, K] (ONNX packs 4-bit values
two per byte, first element in the low nibble: the checkpoint's bytes as they are) dequantized by
two chained DequantizeLinear nodes, the pattern TensorRT reads:

    weight_scale (FLOAT8E4M3FN [N, K/16]) --DQ(x_scale = weight_scale_2, FP32)--> block scales (FP32)
    weight       (FLOAT4E2M1   [N, K])    --DQ(x_scale = block scales, axis=1, block_size=16)--> W (FP32)

Activations are quantized as the compiled graph does (dynamic per-tensor amax, 1x16 E4M3 block
scales, E2M1 round-to-nearest-even), written in standard ONNX ops (ReduceMax, Div, Cast to
FLOAT8E4M3FN, comparisons), then dequantized; the MatMul sees the same values as the NVFP4 GEMM.
"""

from __future__ import annotations

import copy
import os
import tempfile

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .checkpoint import plan as rewrite_plan
from .config import Config
from .format import quantize

OPSET = 23
MARKER = "nvfp4_weight"
FLT_MAX = torch.finfo(torch.float32).max


def activation_qdq(x: torch.Tensor) -> torch.Tensor:
    """NVFP4 quantize-dequantize of ``x`` (last dim a multiple of 16) in exportable torch ops,
    step for step as NVFP4_SPEC.md (and so bit for bit as ``nvfp4.quantize(x).dequantize()``)."""
    xf = x.float()
    amax = xf.abs().flatten().amax(0)  # (aten.amax over all dims has no ONNX translation)
    # a tensor numerator: `2688.0 / amax` would run as reciprocal(amax) * 2688 (two roundings),
    # 1 ulp off the spec's S_enc for about one tensor in five
    s_enc = torch.clamp(torch.full_like(amax, 2688.0) / amax, max=FLT_MAX)
    s_enc = torch.where(s_enc == 0, torch.ones_like(s_enc), s_enc)
    s_dec = 1.0 / s_enc
    blocks = xf.reshape(*xf.shape[:-1], -1, 16)
    r6 = torch.tensor(1.0) / torch.tensor(6.0)
    b = torch.clamp(blocks.abs().amax(-1, keepdim=True) * (s_enc * r6), max=FLT_MAX).clamp(-448.0, 448.0)
    b = b.to(torch.float8_e4m3fn).float()
    e = torch.clamp(1.0 / (b * s_dec), max=FLT_MAX)
    v = torch.clamp(blocks * e, -6.0, 6.0)
    a = v.abs()
    # E2M1 round to nearest even (ties alternate between > and >=), sign restored afterwards.
    mag = torch.where(a > 5.0, 6.0, torch.where(a >= 3.5, 4.0, torch.where(a > 2.5, 3.0, torch.where(
        a >= 1.75, 2.0, torch.where(a > 1.25, 1.5, torch.where(a >= 0.75, 1.0, torch.where(a > 0.25, 0.5, 0.0)))))))
    q = torch.where(v < 0, -mag, mag)
    return ((q * b) * s_dec).reshape(x.shape).to(x.dtype)


class ExportLinear(nn.Module):
    """A quantized linear as ONNX will compute it; ``nvfp4_weight`` is swapped for the DQ chain."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        q = quantize(linear.weight.detach().float(), block=(1, 16))
        self.q = q
        self.register_buffer(MARKER, q.dequantize())
        self.bias = linear.bias

    def forward(self, x):
        return F.linear(activation_qdq(x), getattr(self, MARKER).to(x.dtype), self.bias)


def export_twin(model: nn.Module, config: Config) -> tuple[nn.Module, dict[str, ExportLinear]]:
    twin = copy.deepcopy(model).float().eval()
    replaced = {}
    for name in rewrite_plan(twin, config).quantized:
        parent, _, child = name.rpartition(".")
        owner = twin.get_submodule(parent) if parent else twin
        replaced[name] = ExportLinear(getattr(owner, child))
        setattr(owner, child, replaced[name])
    return twin, replaced


def _find_initializer(graph: onnx.GraphProto, value: np.ndarray, module: str) -> tuple[str, bool]:
    """(name, holds W^T) of the initializer the exporter made of ``module``'s marker buffer: by
    name, else by content (for 3-D inputs the exporter folds the transpose into a new initializer).
    Transposition is decided by content, since square weights have the same dims either way."""
    wanted = f"{module}.{MARKER}"
    candidates = [i for i in graph.initializer if i.name == wanted] or list(graph.initializer)
    for init in candidates:
        if tuple(init.dims) not in (value.shape, value.shape[::-1]):
            continue
        arr = numpy_helper.to_array(init)
        if arr.shape == value.shape and np.array_equal(arr, value):
            return init.name, False
        if arr.shape == value.T.shape and np.array_equal(arr, value.T):
            return init.name, True
    raise RuntimeError(f"onnx export: no initializer found for {module}'s weight")


def _dq_chain(name: str, q) -> tuple[list, list]:
    """Initializers and nodes that compute ``name`` (FP32 [N, K]) from FP4 + E4M3 + FP32 scales."""
    n, k = q.shape
    fp4 = helper.make_tensor(f"{name}_fp4", TensorProto.FLOAT4E2M1, [n, k], q.data.numpy().tobytes(), raw=True)
    scale = helper.make_tensor(f"{name}_scale", TensorProto.FLOAT8E4M3FN, [n, k // 16],
                               q.scale.view(torch.uint8).numpy().tobytes(), raw=True)
    scale_2 = numpy_helper.from_array(q.global_scale.numpy().astype(np.float32).reshape(()), f"{name}_scale_2")
    nodes = [
        helper.make_node("DequantizeLinear", [f"{name}_scale", f"{name}_scale_2"], [f"{name}_block_scale"],
                         name=f"{name}_dq_scale"),
        helper.make_node("DequantizeLinear", [f"{name}_fp4", f"{name}_block_scale"], [f"{name}_nk"],
                         axis=1, block_size=16, name=f"{name}_dq_weight"),
    ]
    return [fp4, scale, scale_2], nodes


def to_onnx(model: nn.Module, inputs: tuple, config: Config | None = None) -> onnx.ModelProto:
    """The ONNX model (see the module docstring); ``inputs`` are example positional inputs."""
    config = config or Config()
    if config.activation_scales != "dynamic":
        raise ValueError("config: ONNX export supports activation_scales='dynamic' only (for now)")
    twin, replaced = export_twin(model, config)
    with torch.no_grad():
        program = torch.onnx.export(twin, tuple(t.float() if t.is_floating_point() else t for t in inputs),
                                    dynamo=True, opset_version=OPSET, verbose=False)
    proto = program.model_proto
    graph = proto.graph
    new_nodes, new_inits, dropped = [], [], set()
    for module, layer in replaced.items():
        name, transposed = _find_initializer(graph, getattr(layer, MARKER).numpy(), module)
        inits, nodes = _dq_chain(name.replace(".", "_"), layer.q)
        if transposed:
            nodes.append(helper.make_node("Transpose", [nodes[-1].output[0]], [name], perm=[1, 0], name=f"{name}_t"))
        else:
            nodes[-1].output[0] = name
        new_inits += inits
        new_nodes += nodes
        dropped.add(name)
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + existing)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save(proto: onnx.ModelProto, path: str, *, force: bool = False) -> None:
    """Write ``proto`` to ``path`` atomically (temporary name, then rename)."""
    if os.path.exists(path) and not force:
        raise FileExistsError(f"--onnx: {path} already exists (pass --force to replace it)")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nvfp4-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
