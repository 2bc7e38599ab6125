"""The native (sm_100+, FP4 tensor core) backend on CPU: its operands are what PyTorch's NVFP4
scaled_mm accepts, and read the way cuBLAS documents the block-scaled layout they give the
reference GEMM. (No GPU here runs FP4 tensor cores: the kernel itself is PyTorch's / cuBLAS's.)"""

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nvfp4_compiler as nvfp4
from nvfp4_compiler.backends import native, reference, resolve_backend

NV_RECIPE = [F.ScalingType.BlockWise1x16, F.ScalingType.TensorWise]
NV_SWIZZLE = [F.SwizzleType.SWIZZLE_32_4_4, F.SwizzleType.NO_SWIZZLE]


def _cublas_scale_offset(row: int, kb: int, padded_cols: int) -> int:
    """Byte of the scale of (row, 16-block kb) in cuBLAS's VEC16_UE4M3 layout: 128 x 4 tiles of
    512 bytes in row-major tile order; inside a tile, (row % 32) * 16 + (row % 128 // 32) * 4 + kb % 4."""
    tile = (row // 128) * (padded_cols // 4) + kb // 4
    return tile * 512 + (row % 32) * 16 + (row % 128) // 32 * 4 + kb % 4


def _fp4_values(packed: torch.Tensor) -> np.ndarray:
    """float4_e2m1fn_x2 bytes -> float64 values, element 2i from the low nibble (ml_dtypes decodes)."""
    raw = packed.view(torch.uint8).numpy()
    codes = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(raw.shape[0], -1)
    return codes.astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)


def _block_scales(flat: torch.Tensor, rows: int, blocks: int) -> np.ndarray:
    padded_cols = (blocks + 3) // 4 * 4
    raw = flat.view(torch.uint8).numpy()
    offsets = np.array([[_cublas_scale_offset(r, kb, padded_cols) for kb in range(blocks)] for r in range(rows)])
    return raw[offsets].view(ml_dtypes.float8_e4m3fn).astype(np.float64)


def _decoded(packed: torch.Tensor, scales: list[torch.Tensor]) -> np.ndarray:
    """float64 [R, Kp] values of one scaled_mm operand (row-major packed rows, [swizzled, S_dec])."""
    values = _fp4_values(packed)
    block_scales = _block_scales(scales[0], values.shape[0], values.shape[1] // 16)
    return values * np.repeat(block_scales, 16, axis=1) * float(scales[1])


def emulated_scaled_mm(mat_a, mat_b, scale_a, recipe_a, scale_b, recipe_b, swizzle_a=None, swizzle_b=None,
                       output_dtype=torch.bfloat16, **unused):
    """What the NVFP4 scaled_mm computes, from its arguments read as cuBLAS lays them out."""
    assert list(recipe_a) == list(recipe_b) == NV_RECIPE and list(swizzle_a) == list(swizzle_b) == NV_SWIZZLE
    product = _decoded(mat_a, scale_a) @ _decoded(mat_b.t(), scale_b).T  # mat_b.t(): W's rows as stored
    return torch.from_numpy(product).to(output_dtype)


def _operands(m, n, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xq = nvfp4.quantize(torch.randn(m, k, generator=gen) * 3)
    wq = nvfp4.quantize(torch.randn(n, k, generator=gen))
    return xq.data, xq.scale, xq.global_scale, wq.data, wq.scale, wq.global_scale


# M below / across one 128-row scale tile, K/16 not a multiple of 4 (padded scale columns).
SHAPES = [(1, 32, 64), (5, 48, 96), (130, 16, 160), (200, 144, 32)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_native_operands_read_as_cublas_documents_give_the_reference_gemm(m, n, k):
    args = _operands(m, n, k, seed=m + k)
    a, a_scales = native.scaled_mm_operand(*args[:3])
    w, w_scales = native.scaled_mm_operand(*args[3:])
    assert a.dtype == w.dtype == torch.float4_e2m1fn_x2
    assert torch.equal(a.view(torch.uint8), args[0]) and torch.equal(w.view(torch.uint8), args[3])
    # Element by element (a GEMM cannot see a pairwise swap of K done to both operands): the
    # operand decodes to the reference's dequantized values.
    want_a = reference.dequantize_op(*args[:3], k, torch.float32).numpy()
    assert np.array_equal(_decoded(a, a_scales).astype(np.float32), want_a)
    got = emulated_scaled_mm(a, w.t(), a_scales, NV_RECIPE, w_scales, NV_RECIPE, NV_SWIZZLE, NV_SWIZZLE,
                             output_dtype=torch.float32)
    want, _ = reference.gemm_op(*args, None, "none", None, None, torch.float32)
    assert (got - want).norm() / want.norm() < 1e-6


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_pytorch_scaled_mm_accepts_the_native_operands(m, n, k):
    """PyTorch's own checks of the NVFP4 recipe (run on meta tensors: shapes, dtypes, scale counts,
    layouts) accept what the native backend passes, and give an [M, N] fp32 result."""
    a, a_scales = native.scaled_mm_operand(*(t.to("meta") for t in _operands(m, n, k)[:3]))
    w, w_scales = native.scaled_mm_operand(*(t.to("meta") for t in _operands(m, n, k)[3:]))
    out = native.nvfp4_scaled_mm(a, a_scales, w, w_scales)
    assert out.shape == (m, n) and out.dtype == torch.float32


def test_native_gemm_op_applies_the_reference_epilogue(monkeypatch):
    monkeypatch.setattr(F, "scaled_mm", emulated_scaled_mm)
    args = _operands(6, 48, 64, seed=3)
    lead_args = [t.view(2, 3, -1) if i in (0, 1) else t for i, t in enumerate(args)]
    gen = torch.Generator().manual_seed(4)
    bias, gate, res = torch.randn(48, generator=gen), torch.randn(2, 1, 48, generator=gen), torch.randn(2, 3, 48)
    epilogue = (bias, "gelu_tanh", gate, res, torch.float32)
    got, amax = native.gemm_op(*lead_args, *epilogue)
    want, want_amax = reference.gemm_op(*lead_args, *epilogue)
    assert got.shape == want.shape == (2, 3, 48)
    assert (got - want).norm() / want.norm() < 1e-6 and torch.allclose(amax, want_amax, rtol=1e-6)


def test_native_backend_leaves_shapes_the_fp4_gemm_refuses_to_triton():
    assert native.takes(64, 32) and not native.takes(48, 32) and not native.takes(64, 40)
    args = _operands(3, 40, 48)
    got, _ = native.gemm_op(*args, None, "none", None, None, torch.float32)  # Triton, interpreted on CPU
    want, _ = reference.gemm_op(*args, None, "none", None, None, torch.float32)
    assert (got - want).norm() / want.norm() < 1e-5


def test_native_is_picked_only_where_fp4_tensor_cores_are(monkeypatch):
    assert resolve_backend("auto", torch.device("cpu"))[0] == "reference"
    with pytest.raises(ValueError, match="'native' needs FP4 tensor cores.*got device cpu"):
        resolve_backend("native", torch.device("cpu"))
    monkeypatch.setattr(native, "available", lambda device: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a Blackwell GPU")
    backend, why = resolve_backend("auto", torch.device("cuda"))
    assert backend == "native" and "FP4 tensor cores" in why
