"""The ``nvfp4::*`` custom ops: the only boundary between rewritten graphs and kernels.

Passes insert these ops; backends implement them. Each op has a fake (meta) implementation, so a
rewritten graph can itself be traced, exported and torch.compiled. The ``backend`` argument is
filled in by the ``lower`` pass and names the implementation to run.

Shapes (K logical reduction length, Kp = K padded to a multiple of 16):
    quantize(x [..., K])            -> data [..., Kp/2] uint8, scale [..., Kp/16] e4m3, global_scale [] fp32
    gemm(A packed [..., Kp/2], W packed [N, Kp/2], epilogue...) -> out [..., N], amax []
    gemm_quantize(as gemm, next_amax)  -> data [..., N/2], scale [..., N/16], global_scale []
    dequantize(packed, k)           -> [..., k]
"""

from __future__ import annotations

import torch

from .backends import get_backend


@torch.library.custom_op("nvfp4::quantize", mutates_args=())
def quantize(x: torch.Tensor, amax: torch.Tensor | None, tile_rows: int, backend: str,
             four_over_six: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NVFP4-quantize ``x`` along its last dim; ``amax`` is a static/producer-given per-tensor amax or None.
    ``four_over_six`` (a keyword in graphs, so ``backend`` stays the last argument) chooses the
    block scales by Four Over Six."""
    return get_backend(backend).quantize_op(x, amax, tile_rows, four_over_six=four_over_six)


@quantize.register_fake
def _(x, amax, tile_rows, backend, four_over_six=False):
    kp = (x.shape[-1] + 15) // 16 * 16
    data = x.new_empty((*x.shape[:-1], kp // 2), dtype=torch.uint8)
    scale = x.new_empty((*x.shape[:-1], kp // 16), dtype=torch.float8_e4m3fn)
    return data, scale, x.new_empty((), dtype=torch.float32)


@torch.library.custom_op("nvfp4::gemm", mutates_args=())
def gemm(
    a_data: torch.Tensor, a_scale: torch.Tensor, a_global_scale: torch.Tensor,
    w_data: torch.Tensor, w_scale: torch.Tensor, w_global_scale: torch.Tensor,
    bias: torch.Tensor | None, activation: str, gate: torch.Tensor | None, residual: torch.Tensor | None,
    out_dtype: torch.dtype, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual + gate * act(alpha * A @ W^T + bias)`` over NVFP4 operands, and the output's amax."""
    return get_backend(backend).gemm_op(
        a_data, a_scale, a_global_scale, w_data, w_scale, w_global_scale,
        bias, activation, gate, residual, out_dtype,
    )


@gemm.register_fake
def _(a_data, a_scale, a_global_scale, w_data, w_scale, w_global_scale, bias, activation, gate, residual,
      out_dtype, backend):
    shape = _gemm_out_shape(a_data, w_data, gate, residual)
    return a_data.new_empty(shape, dtype=out_dtype), a_data.new_empty((), dtype=torch.float32)


def _gemm_out_shape(a_data, w_data, gate, residual) -> torch.Size:
    """[..., N]: A's rows, broadcast with the gate/residual shapes."""
    shape = torch.Size([*a_data.shape[:-1], w_data.shape[0]])
    if gate is not None or residual is not None:
        shape = torch.broadcast_shapes(shape, *(t.shape for t in (gate, residual) if t is not None))
    return shape


@torch.library.custom_op("nvfp4::gemm_quantize", mutates_args=())
def gemm_quantize(
    a_data: torch.Tensor, a_scale: torch.Tensor, a_global_scale: torch.Tensor,
    w_data: torch.Tensor, w_scale: torch.Tensor, w_global_scale: torch.Tensor,
    bias: torch.Tensor | None, activation: str, gate: torch.Tensor | None, residual: torch.Tensor | None,
    out_dtype: torch.dtype, next_amax: torch.Tensor, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``quantize(gemm(...)[0], next_amax, 1)`` in one op: the GEMM's epilogue writes the next GEMM's
    NVFP4 operand (static per-tensor amax) instead of its ``out_dtype`` output."""
    return get_backend(backend).gemm_quantize_op(
        a_data, a_scale, a_global_scale, w_data, w_scale, w_global_scale,
        bias, activation, gate, residual, out_dtype, next_amax,
    )


@gemm_quantize.register_fake
def _(a_data, a_scale, a_global_scale, w_data, w_scale, w_global_scale, bias, activation, gate, residual,
      out_dtype, next_amax, backend):
    *lead, n = _gemm_out_shape(a_data, w_data, gate, residual)
    data = a_data.new_empty((*lead, n // 2), dtype=torch.uint8)
    scale = a_data.new_empty((*lead, n // 16), dtype=torch.float8_e4m3fn)
    return data, scale, a_data.new_empty((), dtype=torch.float32)


@torch.library.custom_op("nvfp4::dequantize", mutates_args=())
def dequantize(data: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor, k: int,
               out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    """Values of a packed NVFP4 tensor whose logical last dimension is ``k``."""
    return get_backend(backend).dequantize_op(data, scale, global_scale, k, out_dtype)


@dequantize.register_fake
def _(data, scale, global_scale, k, out_dtype, backend):
    return data.new_empty((*data.shape[:-1], k), dtype=out_dtype)


QUANTIZE = torch.ops.nvfp4.quantize.default
GEMM = torch.ops.nvfp4.gemm.default
GEMM_QUANTIZE = torch.ops.nvfp4.gemm_quantize.default
GEMMS = (GEMM, GEMM_QUANTIZE)  # the ops that hold a weight and a GEMM site
DEQUANTIZE = torch.ops.nvfp4.dequantize.default
