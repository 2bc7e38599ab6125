"""The Triton backend: generated kernels for NVFP4 quantization and W4A4 GEMMs (Hopper and later).

Same op contract as ``backends.reference``; packed bytes and scales are bit-identical to it, GEMM
outputs equal it within fp32 accumulation-order noise. Runs on CPU under TRITON_INTERPRET=1.
Inputs must be finite (the reference's NaN policies are not reproduced here).
"""

from __future__ import annotations

import torch

from .. import reference
from .gemm import gemm as _gemm
from .quantize import quantize as _quantize


def quantize_op(x: torch.Tensor, amax: torch.Tensor | None, tile_rows: int, *, rht: bool = False,
                seed: int | torch.Tensor | None = None, four_over_six: bool = False):
    return _quantize(x, amax, tile_rows, rht=rht, seed=seed, four_over_six=four_over_six)


def gemm_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual, out_dtype):
    return _gemm(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual, out_dtype)


def gemm_quantize_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual,
                     out_dtype, next_amax):
    return _gemm(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual, out_dtype,
                 next_amax=next_amax)


# Dequantization is off the hot path (inspection, export): the reference serves it.
dequantize_op = reference.dequantize_op
