"""The native backend: W4A4 GEMMs on the FP4 tensor cores of sm_100+ GPUs (Blackwell), through
PyTorch's block-scaled ``torch.nn.functional.scaled_mm`` (cuBLASLt) with the NVFP4 recipe:

    operands     E2M1 pairs viewed as ``float4_e2m1fn_x2`` (the same bytes: element 2i in the
                 low nibble), A [M, Kp/2] row-major, W^T [Kp/2, N] column-major (W's rows as stored)
    scales       [E4M3 block scales (BlockWise1x16) in the 128x4 swizzled layout (SWIZZLE_32_4_4,
                 ``format.swizzle``), FP32 per-tensor decode scale (TensorWise)] per operand
    product      fp32: the exact E2M1 x E4M3 products of the spec, accumulated by the tensor cores
    epilogue     ``reference.epilogue`` in PyTorch (bias, activation, gate, residual, one rounding)

Shapes the FP4 GEMM does not take (Kp not a multiple of 32, N not a multiple of 16) and
quantization run on the Triton kernels, which Blackwell runs too. Only ``lower`` picks this backend,
and only on sm_100+ (``available``).

Status: this project's GPUs are Hopper, so this path has not run on hardware. Its operand layout is
tested on CPU (tests/test_native_backend.py): PyTorch's own shape checks accept the operands, and a
model of the block-scaled product that reads the swizzled bytes as cuBLAS documents them equals the
reference GEMM. The weight's scales are re-swizzled on every call (one small copy; a per-weight
cache is not built).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..format.swizzle import to_swizzled
from . import reference

#: Operand shapes the FP4 scaled_mm takes (PyTorch checks both): packed K a multiple of 16 bytes
#: (Kp % 32 == 0) and N a multiple of 16.
K_MULTIPLE, N_MULTIPLE = 32, 16


def available(device: torch.device) -> bool:
    """FP4 tensor cores and a PyTorch with the NVFP4 scaled_mm recipe: CUDA, compute capability >= 10."""
    return (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (10, 0)
            and hasattr(F, "scaled_mm") and hasattr(torch, "float4_e2m1fn_x2"))


def takes(kp: int, n: int) -> bool:
    """Whether the FP4 GEMM takes a [*, Kp] x [N, Kp]^T product (else the Triton kernel runs it)."""
    return kp % K_MULTIPLE == 0 and n % N_MULTIPLE == 0


def scaled_mm_operand(data: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor):
    """One NVFP4 operand as scaled_mm reads it: (float4_e2m1fn_x2 [R, Kp/2], [swizzled E4M3 block
    scales, flat; the FP32 decode scale])."""
    rows = data.reshape(-1, data.shape[-1])
    block_scales = to_swizzled(scale.reshape(-1, scale.shape[-1]))
    return rows.view(torch.float4_e2m1fn_x2), [block_scales, global_scale.reshape(()).to(torch.float32)]


def nvfp4_scaled_mm(a, a_scales, w, w_scales) -> torch.Tensor:
    """fp32 [M, N] = (A x block scales x S_dec_a) @ (W x block scales x S_dec_w)^T on FP4 tensor cores."""
    recipe = [F.ScalingType.BlockWise1x16, F.ScalingType.TensorWise]
    swizzle = [F.SwizzleType.SWIZZLE_32_4_4, F.SwizzleType.NO_SWIZZLE]
    return F.scaled_mm(a, w.t(), a_scales, recipe, w_scales, recipe, swizzle_a=swizzle, swizzle_b=swizzle,
                       output_dtype=torch.float32)


def gemm_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual, out_dtype):
    """Same contract as ``reference.gemm_op``."""
    kp, n = a_data.shape[-1] * 2, w_data.shape[0]
    if not takes(kp, n) or a_data.numel() == 0:
        return _triton().gemm_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate,
                                 residual, out_dtype)
    a, a_scales = scaled_mm_operand(a_data, a_scale, a_global)
    w, w_scales = scaled_mm_operand(w_data, w_scale, w_global)
    y = nvfp4_scaled_mm(a, a_scales, w, w_scales).view(*a_data.shape[:-1], n)
    return reference.epilogue(y, bias, activation, gate, residual, out_dtype)


def gemm_quantize_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual,
                     out_dtype, next_amax):
    """Same contract as ``reference.gemm_quantize_op`` (the GEMM here, the quantization on Triton)."""
    out, _ = gemm_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual, out_dtype)
    return quantize_op(out, next_amax, 1)


def quantize_op(x, amax, tile_rows, *, rht: bool = False, seed=None, four_over_six: bool = False):
    return _triton().quantize_op(x, amax, tile_rows, rht=rht, seed=seed, four_over_six=four_over_six)


dequantize_op = reference.dequantize_op


def _triton():
    from . import triton as triton_backend  # imported on use: the module imports triton

    return triton_backend
