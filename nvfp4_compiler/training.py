"""NVFP4 training GEMMs with NVIDIA's recipe (NVFP4_SPEC.md, "Training recipe").

For ``y = x W^T + b`` (x [M, K], W [N, K]) the three GEMMs take these operands:

    fprop  y  = x  . W^T      x: 1x16 along K                    W: 16x16 tiles
    dgrad  dx = dy . W        dy: 1x16 along N, stochastic        W: the same 16x16 tiles (W^T shares values)
    wgrad  dW = dy^T . x      dy^T: 1x16 along M, RHT, stochastic  x^T: 1x16 along M, RHT

The random Hadamard transform is applied along M to both wgrad operands, so it cancels in the
product. For backward, the forward saves x^T already quantized (NVFP4 with RHT), which is the
wgrad operand itself, instead of x in bf16: about 0.28x the activation memory.
Each product is computed from the dequantized operands in fp32, which equals the NVFP4 GEMM
within fp32 accumulation order (values are exact in fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .format import NVFP4Tensor, quantize


@dataclass(frozen=True)
class Recipe:
    """Switches of the NVFP4 training recipe; the defaults are NVIDIA's."""

    weight_tiles_2d: bool = True     # 16x16 weight blocks, so W and W^T share values
    rht_wgrad: bool = True           # random Hadamard transform on both wgrad operands
    stochastic_gradients: bool = True  # stochastic rounding of dy (dgrad and wgrad)
    quantize: bool = True            # False: plain high-precision GEMMs (checks the plumbing)


NVFP4_RECIPE = Recipe()


def _pad_rows(x: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    rows = x.shape[0]
    pad = (-rows) % multiple
    return torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x


def _seed() -> int:
    return int(torch.randint(0, 2**62, (1,)).item())


def _quantize_along_tokens(t: torch.Tensor, recipe: Recipe, stochastic: bool) -> NVFP4Tensor:
    """t [M, C] -> NVFP4 of t^T [C, M'] with blocks along M (M' = M padded to 16), the wgrad layout."""
    return quantize(_pad_rows(t).T.contiguous(), rht=recipe.rht_wgrad, stochastic=stochastic,
                    seed=_seed() if stochastic else None)


class NVFP4Linear(torch.autograd.Function):
    """``y = x W^T + b`` with fprop, dgrad and wgrad in NVFP4 (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, recipe: Recipe):
        x2 = x.reshape(-1, x.shape[-1])
        if not recipe.quantize:
            ctx.save_for_backward(x2, weight)
            ctx.recipe, ctx.x_shape, ctx.has_bias = recipe, x.shape, bias is not None
            y = x2.float() @ weight.float().T
        else:
            wq = quantize(weight, block=(16, 16) if recipe.weight_tiles_2d else (1, 16))
            y = quantize(x2).dequantize() @ wq.dequantize().T
            xt = _quantize_along_tokens(x2, recipe, stochastic=False)  # the wgrad operand, saved in NVFP4
            ctx.saved_nvfp4 = (wq, xt)
            ctx.recipe, ctx.x_shape, ctx.has_bias, ctx.rows = recipe, x.shape, bias is not None, x2.shape[0]
        if bias is not None:
            y = y + bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        recipe = ctx.recipe
        dy2 = dy.reshape(-1, dy.shape[-1])
        if not recipe.quantize:
            x2, weight = ctx.saved_tensors
            dx = dy2.float() @ weight.float()
            dw = dy2.float().T @ x2.float()
        else:
            wq, xt = ctx.saved_nvfp4
            sr = recipe.stochastic_gradients
            dyq = quantize(dy2, stochastic=sr, seed=_seed() if sr else None)
            dx = dyq.dequantize() @ wq.dequantize()
            dyt = _quantize_along_tokens(dy2, recipe, stochastic=sr)
            dw = dyt.dequantize(undo_rht=False) @ xt.dequantize(undo_rht=False).T
        db = dy2.float().sum(0) if ctx.has_bias else None
        dx = dx.to(dy.dtype).reshape(ctx.x_shape)
        return dx, dw.to(dy.dtype), None if db is None else db.to(dy.dtype), None


def nvfp4_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 recipe: Recipe = NVFP4_RECIPE) -> torch.Tensor:
    """Functional form of :class:`NVFP4Linear` (what the training graph calls)."""
    return NVFP4Linear.apply(x, weight, bias, recipe)


def saved_activation_bytes(rows: int, k: int) -> tuple[int, int]:
    """(bf16 bytes, NVFP4 bytes) that one linear saves for backward: x vs the NVFP4 x^T."""
    padded = -(-rows // 16) * 16
    return 2 * rows * k, k * padded // 2 + k * padded // 16 + 4


def nvfp4_linear_switches(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          weight_tiles_2d: bool, rht_wgrad: bool, stochastic_gradients: bool) -> torch.Tensor:
    """:func:`nvfp4_linear` with the recipe's switches as plain arguments (what an FX graph can hold)."""
    return NVFP4Linear.apply(x, weight, bias, Recipe(weight_tiles_2d, rht_wgrad, stochastic_gradients))
