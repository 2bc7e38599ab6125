"""NVFP4 training GEMMs with NVIDIA's recipe (NVFP4_SPEC.md, "Training recipe").

For ``y = x W^T + b`` (x [M, K], W [N, K]) the three GEMMs take these operands:

    fprop  y  = x  . W^T      x: 1x16 along K                    W: 16x16 tiles
    dgrad  dx = dy . W        dy: 1x16 along N, stochastic        W: the same 16x16 tiles (W^T shares values)
    wgrad  dW = dy^T . x      dy^T: 1x16 along M, RHT, stochastic  x^T: 1x16 along M, RHT

The random Hadamard transform is applied along M to both wgrad operands, so it cancels in the
product. For backward, the forward saves x^T already quantized (NVFP4 with RHT), which is the
wgrad operand itself, instead of x in bf16: about 0.28x the activation memory.
dgrad reads W^T quantized along N: with 16x16 tiles, W's codes and tile scales moved
(``NVFP4Tensor.transpose_tiles``), no second quantization.

Every GEMM here is "A . B^T" over two NVFP4 operands quantized along the reduction dimension.
They go through a backend's ``quantize_op`` and ``gemm_op``, chosen once per forward: the
reference, or on CUDA GPUs the Triton backend (the same quantize bits, RHT and stochastic draws
included), equal within fp32 accumulation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backends import get_backend, triton_usable
from .format import NVFP4Tensor

KERNEL_SETS = ("auto", "reference", "triton")


@dataclass(frozen=True)
class Recipe:
    """Switches of the NVFP4 training recipe; the defaults are NVIDIA's."""

    weight_tiles_2d: bool = True     # 16x16 weight blocks, so W and W^T share values
    rht_wgrad: bool = True           # random Hadamard transform on both wgrad operands
    stochastic_gradients: bool = True  # stochastic rounding of dy (dgrad and wgrad)
    four_over_six: bool = False      # Four Over Six block scales on the fprop operands (x, W; so W^T too)
    quantize: bool = True            # False: plain high-precision GEMMs (checks the plumbing)
    kernels: str = "auto"            # "auto": Triton on CUDA GPUs (sm_80+), else the reference

    def __post_init__(self):
        if self.kernels not in KERNEL_SETS:
            raise ValueError(f"kernels: expected one of {KERNEL_SETS}, got {self.kernels!r}")

    def backend_name(self, t: torch.Tensor) -> str:
        """"triton" or "reference": which backend computes this recipe for tensors like ``t``."""
        if self.kernels == "triton" and not triton_usable(t.device):
            raise ValueError(f"kernels: 'triton' needs a CUDA GPU (sm_80+) or TRITON_INTERPRET=1, got {t.device}")
        use_triton = self.kernels == "triton" or (self.kernels == "auto" and t.is_cuda and triton_usable(t.device))
        return "triton" if use_triton else "reference"

    def backend(self, t: torch.Tensor):
        """The backend module (its ``quantize_op`` and ``gemm_op``) for tensors like ``t``."""
        return get_backend(self.backend_name(t))


NVFP4_RECIPE = Recipe()


def _seed(device: torch.device) -> torch.Tensor:
    """A stochastic-rounding seed in [0, 2^62), drawn from ``device``'s generator and left there:
    no host sync, and CUDA graphs replay a fresh draw each step (a host int would be frozen)."""
    return torch.randint(0, 2**62, (1,), device=device)


def _quantize(backend, t: torch.Tensor, block=(1, 16), rht=False, stochastic=False,
              four_over_six=False) -> NVFP4Tensor:
    """One GEMM operand (the same bits on every backend)."""
    data, scale, s_dec = backend.quantize_op(t, None, block[0], rht=rht, seed=_seed(t.device) if stochastic else None,
                                             four_over_six=four_over_six)
    return NVFP4Tensor(data, scale, s_dec.reshape(()), t.shape, tuple(block), rht)


def _quantize_along_tokens(backend, t: torch.Tensor, recipe: Recipe, stochastic: bool) -> NVFP4Tensor:
    """t [M, C] -> NVFP4 of t^T [C, M] with blocks along M (data [C, M'/2], M' = M padded to 16
    with zeros, as quantization pads), the wgrad layout. The transposed view is read in place."""
    return _quantize(backend, t.T, rht=recipe.rht_wgrad, stochastic=stochastic)


def weight_for_fprop(backend, weight: torch.Tensor, recipe: Recipe) -> NVFP4Tensor:
    """W quantized along K, for fprop (16x16 tiles or 1x16 blocks, as the recipe says)."""
    return _quantize(backend, weight, (16, 16) if recipe.weight_tiles_2d else (1, 16),
                     four_over_six=recipe.four_over_six)


def weight_for_dgrad(backend, weight: torch.Tensor, recipe: Recipe, wq: NVFP4Tensor | None = None) -> NVFP4Tensor:
    """W^T quantized along N, for dgrad. With 16x16 tiles it is W's codes and tile scales moved
    (from ``wq`` when the caller has it); 1x16 blocks quantize W^T on its own."""
    if recipe.weight_tiles_2d:
        return (wq if wq is not None else weight_for_fprop(backend, weight, recipe)).transpose_tiles()
    return _quantize(backend, weight.T.contiguous(), four_over_six=recipe.four_over_six)


def _weight_operands(backend, weight: torch.Tensor, recipe: Recipe) -> tuple[NVFP4Tensor, NVFP4Tensor]:
    """(W for fprop, W^T for dgrad), each quantized along its GEMM's reduction dimension."""
    wq = weight_for_fprop(backend, weight, recipe)
    return wq, weight_for_dgrad(backend, weight, recipe, wq)


def _gemm_nt(backend, a: NVFP4Tensor, b: NVFP4Tensor, out_dtype: torch.dtype,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a . b^T (+ bias)`` for NVFP4 ``a`` [M, K] and ``b`` [N, K] (RHT kept: it cancels)."""
    y, _ = backend.gemm_op(a.data, a.scale, a.global_scale, b.data, b.scale, b.global_scale, bias, "none",
                           None, None, out_dtype)
    return y


def fprop(backend, x2: torch.Tensor, wq: NVFP4Tensor, bias: torch.Tensor | None,
          recipe: Recipe) -> tuple[torch.Tensor, NVFP4Tensor, NVFP4Tensor]:
    """(y [M, N], x in NVFP4, x^T in NVFP4): the forward GEMM, its activation operand (what a
    recompute of y needs) and the wgrad operand backward keeps instead of x."""
    xq = _quantize(backend, x2, four_over_six=recipe.four_over_six)
    y = _gemm_nt(backend, xq, wq, x2.dtype, bias)
    return y, xq, _quantize_along_tokens(backend, x2, recipe, stochastic=False)


def backprop(backend, dy2: torch.Tensor, wq_t: NVFP4Tensor, xt: NVFP4Tensor, k: int, weight_dtype: torch.dtype,
             has_bias: bool, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dx [M, K], dW [N, K], db [N] or None) from dy [M, N]: dgrad, wgrad and the bias sum.
    Stochastic draws happen in this order: dy for dgrad, then dy^T for wgrad."""
    sr = recipe.stochastic_gradients
    dx = _gemm_nt(backend, _quantize(backend, dy2, stochastic=sr), wq_t, dy2.dtype)[:, :k]
    dyt = _quantize_along_tokens(backend, dy2, recipe, stochastic=sr)
    dw = _gemm_nt(backend, dyt, xt, weight_dtype)
    db = dy2.float().sum(0).to(dy2.dtype) if has_bias else None
    return dx, dw, db


class NVFP4Linear(torch.autograd.Function):
    """``y = x W^T + b`` with fprop, dgrad and wgrad in NVFP4 (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, recipe: Recipe):
        x2 = x.reshape(-1, x.shape[-1])
        if not recipe.quantize:
            ctx.save_for_backward(x2, weight)
            ctx.recipe, ctx.x_shape, ctx.has_bias = recipe, x.shape, bias is not None
            y = x2.float() @ weight.float().T
            if bias is not None:
                y = y + bias.float()
            return y.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])
        backend = recipe.backend(x2)
        wq, wq_t = _weight_operands(backend, weight, recipe)
        y, _, xt = fprop(backend, x2, wq, bias, recipe)
        ctx.saved_nvfp4 = (wq_t, xt)
        ctx.recipe, ctx.backend, ctx.x_shape, ctx.has_bias = recipe, backend, x.shape, bias is not None
        ctx.k, ctx.weight_dtype = weight.shape[1], weight.dtype
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        recipe = ctx.recipe
        dy2 = dy.reshape(-1, dy.shape[-1])
        if not recipe.quantize:
            x2, weight = ctx.saved_tensors
            dx = dy2.float() @ weight.float()
            dw = dy2.float().T @ x2.float()
            db = dy2.float().sum(0) if ctx.has_bias else None
            dx = dx.to(dy.dtype).reshape(ctx.x_shape)
            return dx, dw.to(dy.dtype), None if db is None else db.to(dy.dtype), None
        wq_t, xt = ctx.saved_nvfp4
        dx, dw, db = backprop(ctx.backend, dy2, wq_t, xt, ctx.k, ctx.weight_dtype, ctx.has_bias, recipe)
        return dx.reshape(ctx.x_shape), dw, db, None


def nvfp4_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 recipe: Recipe = NVFP4_RECIPE) -> torch.Tensor:
    """Functional form of :class:`NVFP4Linear` (what the training graph calls)."""
    return NVFP4Linear.apply(x, weight, bias, recipe)


def saved_activation_bytes(rows: int, k: int) -> tuple[int, int]:
    """(bf16 bytes, NVFP4 bytes) that one linear saves for backward: x vs the NVFP4 x^T."""
    padded = -(-rows // 16) * 16
    return 2 * rows * k, k * padded // 2 + k * padded // 16 + 4

