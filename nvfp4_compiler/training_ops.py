"""The NVFP4 training linear as custom ops, so training graphs can go to AOTAutograd and Inductor.

    nvfp4::linear_train(x, W, b, activation, switches) -> (z, xt..., xq...)
        fprop in NVFP4 (``training.fprop``), y = x W^T + b, then z = activation(y) ("none": z = y).
        Also returns the wgrad operand x^T already quantized (1x16 blocks along tokens, RHT): the
        one activation backward needs, so it is what autograd keeps (about 0.28x the bytes of x
        in bf16). With an activation, also x quantized as fprop used it (xq): backward recomputes
        y from xq and W, bit for bit, instead of keeping y. For a Wan FFN that keeps 2 x 0.28x of
        the 1536-wide input instead of the 8960-wide pre-GELU y in bf16.
    nvfp4::linear_train_backward(dz, xt..., xq..., W, b, activation, switches) -> (dx, dW, db)
        the activation's backward (on the recomputed y), then dgrad and wgrad in NVFP4
        (``training.backprop``); W^T is re-derived from W's 16x16 tiles rather than kept from the
        forward, so no weight copy is held between the two passes.

An autograd.Function called from an FX graph is opaque to AOTAutograd: it would trace into it
(and into the Triton launchers). As ops with a registered autograd formula, AOTAutograd sees a
forward op whose saved outputs are NVFP4 bytes; Inductor's partitioner decides what else to keep
and fuses the ops around them. Numerics: those of :class:`~nvfp4_compiler.training.NVFP4Linear`
followed by PyTorch's activation and its autograd backward, draw for draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backends.reference import ACTIVATIONS
from .format import NVFP4Tensor
from .training import Recipe, _gemm_nt, backprop, fprop, weight_for_dgrad, weight_for_fprop


def activation_backward(dz: torch.Tensor, y: torch.Tensor, activation: str) -> torch.Tensor:
    """dL/dy from dL/dz and y: the aten backward ops PyTorch's autograd runs for
    ``ACTIVATIONS[activation]`` (the PyTorch functions the unfused graph called)."""
    if activation == "none":
        return dz
    if activation in ("gelu", "gelu_tanh"):
        return torch.ops.aten.gelu_backward(dz, y, approximate="tanh" if activation == "gelu_tanh" else "none")
    if activation == "silu":
        return torch.ops.aten.silu_backward(dz, y)
    return torch.ops.aten.threshold_backward(dz, F.relu(y), 0)


def _recipe(weight_tiles_2d: bool, rht_wgrad: bool, stochastic_gradients: bool, four_over_six: bool,
            kernels: str) -> Recipe:
    return Recipe(weight_tiles_2d, rht_wgrad, stochastic_gradients, four_over_six=four_over_six, kernels=kernels)


def _nothing(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stand-ins for xq when no activation is folded (custom ops cannot return None)."""
    return x.new_empty(0, dtype=torch.uint8), x.new_empty(0, dtype=torch.float8_e4m3fn), x.new_empty(0)


@torch.library.custom_op("nvfp4::linear_train", mutates_args=())
def linear_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
                 weight_tiles_2d: bool, rht_wgrad: bool, stochastic_gradients: bool, four_over_six: bool,
                 kernels: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor]:
    """``activation(x W^T + b)`` with the NVFP4 recipe, plus the NVFP4 operands backward keeps."""
    recipe = _recipe(weight_tiles_2d, rht_wgrad, stochastic_gradients, four_over_six, kernels)
    x2 = x.reshape(-1, x.shape[-1])
    backend = recipe.backend(x2)
    y, xq, xt = fprop(backend, x2, weight_for_fprop(backend, weight, recipe), bias, recipe)
    z = ACTIVATIONS[activation](y).reshape(*x.shape[:-1], weight.shape[0])
    kept = (xq.data, xq.scale, xq.global_scale) if activation != "none" else _nothing(x)
    return z, xt.data, xt.scale, xt.global_scale, *kept


@linear_train.register_fake
def _(x, weight, bias, activation, weight_tiles_2d, rht_wgrad, stochastic_gradients, four_over_six, kernels):
    k, rows = x.shape[-1], x.numel() // max(x.shape[-1], 1)
    padded_rows = -(-rows // 16) * 16
    kp = -(-k // 16) * 16
    xt = (x.new_empty((k, padded_rows // 2), dtype=torch.uint8),
          x.new_empty((k, padded_rows // 16), dtype=torch.float8_e4m3fn), x.new_empty((), dtype=torch.float32))
    xq = (x.new_empty((rows, kp // 2), dtype=torch.uint8), x.new_empty((rows, kp // 16), dtype=torch.float8_e4m3fn),
          x.new_empty((), dtype=torch.float32)) if activation != "none" else _nothing(x)
    return x.new_empty((*x.shape[:-1], weight.shape[0])), *xt, *xq


@torch.library.custom_op("nvfp4::linear_train_backward", mutates_args=())
def linear_train_backward(dz: torch.Tensor, xt_data: torch.Tensor, xt_scale: torch.Tensor,
                          xt_global_scale: torch.Tensor, xq_data: torch.Tensor, xq_scale: torch.Tensor,
                          xq_global_scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          activation: str, weight_tiles_2d: bool, rht_wgrad: bool, stochastic_gradients: bool,
                          four_over_six: bool, kernels: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW, db) of :func:`linear_train`; db is empty when the layer has no bias."""
    recipe = _recipe(weight_tiles_2d, rht_wgrad, stochastic_gradients, four_over_six, kernels)
    n, k = weight.shape
    dz2 = dz.reshape(-1, n)
    backend = recipe.backend(dz2)
    wq = None  # W for fprop: only a recompute of y needs it (and W^T may be derived from it)
    if activation != "none":  # y again, from the operands fprop used: the same bits as the forward's y
        wq = weight_for_fprop(backend, weight, recipe)
        xq = NVFP4Tensor(xq_data, xq_scale, xq_global_scale, torch.Size([dz2.shape[0], k]))
        dz2 = activation_backward(dz2, _gemm_nt(backend, xq, wq, dz.dtype, bias), activation)
    wq_t = weight_for_dgrad(backend, weight, recipe, wq)
    xt = NVFP4Tensor(xt_data, xt_scale, xt_global_scale, torch.Size([k, xt_data.shape[1] * 2]), (1, 16), rht_wgrad)
    dx, dw, db = backprop(backend, dz2, wq_t, xt, k, weight.dtype, bias is not None, recipe)
    db = db if db is not None else dz.new_empty(0)
    return dx.contiguous().reshape(*dz.shape[:-1], k), dw, db


@linear_train_backward.register_fake
def _(dz, xt_data, xt_scale, xt_global_scale, xq_data, xq_scale, xq_global_scale, weight, bias, activation,
      weight_tiles_2d, rht_wgrad, stochastic_gradients, four_over_six, kernels):
    return (dz.new_empty((*dz.shape[:-1], weight.shape[1])), torch.empty_like(weight),
            dz.new_empty((weight.shape[0] if bias is not None else 0,)))


def _setup_context(ctx, inputs, output):
    _x, weight, bias, activation, *switches = inputs
    _z, *operands = output
    ctx.save_for_backward(*operands, weight, bias)
    ctx.mark_non_differentiable(*operands)
    ctx.activation, ctx.switches = activation, switches


def _backward(ctx, dz, *_unused):
    *operands, weight, bias = ctx.saved_tensors
    dx, dw, db = linear_train_backward(dz.contiguous(), *operands, weight, bias, ctx.activation, *ctx.switches)
    return dx, dw, db if bias is not None else None, None, None, None, None, None, None


linear_train.register_autograd(_backward, setup_context=_setup_context)

LINEAR_TRAIN = torch.ops.nvfp4.linear_train.default
