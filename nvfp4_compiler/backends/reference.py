"""The reference backend: every nvfp4 op in plain PyTorch, CPU or GPU, exact to NVFP4_SPEC.md.

This is the definition of correct that the Triton and native backends are tested against.

GEMM with fused epilogue, in this order (fp32 throughout, one rounding to ``out_dtype`` at the end):
    acc = sum_k (qa * ba)(qw * bw)                  exact products, fp32 accumulation
    y   = acc * (S_dec_a * S_dec_w)                 alpha: the two per-tensor decode scales
    y   = act(y + bias)                             bias, then activation
    y   = residual + gate * y                       gated residual (each optional)
    out = y.to(out_dtype);  amax = max |out|        amax of the *rounded* output, so a consumer that
                                                    quantizes ``out`` gets the same scale as computing it itself
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..calibration import UNCALIBRATED
from ..format import BLOCK_2D, NVFP4Tensor, quantize
from ..format.e2m1 import e2m1_decode, unpack_nibbles

ACTIVATIONS = {
    "none": lambda y: y,
    "gelu": lambda y: F.gelu(y),
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


def quantize_op(x: torch.Tensor, amax: torch.Tensor | None, tile_rows: int, *, rht: bool = False,
                seed: int | torch.Tensor | None = None, four_over_six: bool = False):
    """(data, scale, global_scale) of ``x`` quantized with 1x16 (tile_rows=1) or 16x16 blocks;
    ``rht`` transforms along K first, a ``seed`` rounds stochastically (the training operands),
    ``four_over_six`` chooses each block's scale by Four Over Six."""
    block = BLOCK_2D if tile_rows == 16 else (1, 16)
    if amax is not None and bool(torch.isnan(amax)):
        raise ValueError(UNCALIBRATED)
    if isinstance(seed, torch.Tensor):  # drawn on the device (see training._seed)
        seed = int(seed.item())
    q = quantize(x, block=block, amax=amax, rht=rht, stochastic=seed is not None, seed=seed, nan="propagate",
                 four_over_six=four_over_six)
    return q.data, q.scale, q.global_scale


def block_values(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E2M1 value x E4M3 block scale per element (fp32, exact), without the per-tensor scale."""
    values = e2m1_decode(unpack_nibbles(data))
    blocks = values.view(*values.shape[:-1], -1, 16) * scale.to(torch.float32).unsqueeze(-1)
    return blocks.flatten(-2)


def gemm_op(
    a_data, a_scale, a_global, w_data, w_scale, w_global,
    bias: torch.Tensor | None, activation: str, gate: torch.Tensor | None, residual: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out = residual + gate * act(alpha * A @ W^T + bias)`` and ``max |out|`` (see module docstring).

    A is ``[..., Kp/2]`` packed (activations), W ``[N, Kp/2]`` packed (weights).
    """
    a = block_values(a_data, a_scale)
    w = block_values(w_data, w_scale)
    return epilogue(torch.matmul(a, w.T) * (a_global * w_global), bias, activation, gate, residual, out_dtype)


def epilogue(y: torch.Tensor, bias, activation: str, gate, residual, out_dtype: torch.dtype):
    """(out, max |out|) from the fp32 product ``y`` = alpha * A @ W^T: bias, activation, gate,
    residual in fp32, one rounding (the module docstring's order; the native backend's too)."""
    if bias is not None:
        y = y + bias.to(torch.float32)
    y = ACTIVATIONS[activation](y)
    if gate is not None:
        y = y * gate.to(torch.float32)
    if residual is not None:
        y = residual.to(torch.float32) + y
    out = y.to(out_dtype)
    return out, out.abs().amax().to(torch.float32) if out.numel() else torch.zeros((), device=out.device)


def gemm_quantize_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual,
                     out_dtype: torch.dtype, next_amax: torch.Tensor):
    """The next GEMM's NVFP4 operand straight from this GEMM: ``quantize_op(gemm_op(...)[0],
    next_amax, 1)``, the output rounded to ``out_dtype`` first exactly as the unfused graph does."""
    out, _ = gemm_op(a_data, a_scale, a_global, w_data, w_scale, w_global, bias, activation, gate, residual, out_dtype)
    return quantize_op(out, next_amax, 1)


def dequantize_op(data, scale, global_scale, k: int, out_dtype: torch.dtype) -> torch.Tensor:
    """Values of a packed tensor with logical last dimension ``k``."""
    shape = torch.Size([*data.shape[:-1], k])
    return NVFP4Tensor(data, scale, global_scale, shape).dequantize(out_dtype)
