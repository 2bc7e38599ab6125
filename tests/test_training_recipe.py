"""NVFP4 training GEMMs: gradients against the recipe computed by hand, RHT cancellation,
plumbing with quantization off, and memory saved for backward."""

import os

import pytest
import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler.format import inverse_rht, rht
from nvfp4_compiler.training import Recipe, nvfp4_linear, saved_activation_bytes


# With NVFP4_TEST_ON_GPU=1 the recipe runs on the GPU (Triton compiled, the reference in CUDA ops).
DEVICE = torch.device("cuda" if os.environ.get("NVFP4_TEST_ON_GPU") == "1" else "cpu")


def _operands(m=40, k=48, n=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn(n, k, generator=gen).to(DEVICE).requires_grad_()
    b = torch.randn(n, generator=gen).to(DEVICE).requires_grad_()
    dy = torch.randn(m, n, generator=gen).to(DEVICE)
    return x, w, b, dy


def _pad(t):
    return torch.nn.functional.pad(t, (0, 0, 0, (-t.shape[0]) % 16))


@pytest.mark.parametrize("kernels", ["reference", "triton"])
@pytest.mark.parametrize("m,k,n,four_over_six", [(40, 48, 32, False), (24, 40, 48, False), (40, 48, 32, True)]
                         + ([(4680, 1536, 1536, False), (4680, 1536, 1536, True)] if DEVICE.type == "cuda" else []))
def test_fprop_dgrad_wgrad_equal_the_recipe_by_hand(kernels, m, k, n, four_over_six):
    """Both kernel sets (Triton under the interpreter on CPU) against the spec's formulas; with
    Four Over Six on the fprop operands (x and W, so W^T in dgrad too), not on x^T or dy."""
    x, w, b, dy = _operands(m, k, n)
    torch.manual_seed(123)
    y = nvfp4_linear(x, w, b, Recipe(kernels=kernels, four_over_six=four_over_six))
    y.backward(dy)

    # The same recipe, step by step, with the same stochastic-rounding seeds (drawn in the same order).
    torch.manual_seed(123)
    wq = nvfp4.quantize(w.detach(), block=(16, 16), four_over_six=four_over_six)
    y_ref = nvfp4.quantize(x.detach(), four_over_six=four_over_six).dequantize() @ wq.dequantize().T + b.detach()
    xt = nvfp4.quantize(_pad(x.detach()).T.contiguous(), rht=True)
    seed_dgrad = int(torch.randint(0, 2**62, (1,), device=DEVICE).item())  # from the operands' device
    dx_ref = nvfp4.quantize(dy, stochastic=True, seed=seed_dgrad).dequantize() @ wq.dequantize()[:, :k]
    seed_wgrad = int(torch.randint(0, 2**62, (1,), device=DEVICE).item())
    dyt = nvfp4.quantize(_pad(dy).T.contiguous(), rht=True, stochastic=True, seed=seed_wgrad)
    dw_ref = dyt.dequantize(undo_rht=False) @ xt.dequantize(undo_rht=False).T

    for got, want in ((y, y_ref), (x.grad, dx_ref), (w.grad, dw_ref)):
        # fp32 accumulation order: errors relative to the largest element of the product
        assert (got - want).abs().max() <= 2e-6 * want.abs().max() + 1e-6
    assert torch.allclose(b.grad, dy.sum(0))
    # ... and it is an approximation of the true gradients, not something else
    assert (w.grad - dy.T @ x.detach()).norm() / (dy.T @ x.detach()).norm() < 0.3


def test_quantization_off_gives_autograd_gradients_exactly():
    x, w, b, dy = _operands()
    nvfp4_linear(x, w, b, Recipe(quantize=False)).backward(dy)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    torch.nn.functional.linear(x2, w2, b2).backward(dy)
    for ours, theirs in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_rht_cancels_in_wgrad():
    _, _, _, dy = _operands()
    x = torch.randn(40, 48, device=DEVICE)
    plain = dy.T @ x
    transformed = rht(_pad(dy).T.contiguous()) @ rht(_pad(x).T.contiguous()).T
    assert torch.allclose(transformed, plain, rtol=1e-4, atol=1e-4)
    assert torch.allclose(inverse_rht(rht(x.T.contiguous()[:, :32])), x.T[:, :32], atol=1e-5)


@pytest.mark.parametrize("n,k", [(32, 48), (48, 40)])
def test_transposed_tiles_are_the_quantized_transpose_bit_for_bit(n, k):
    """dgrad's W^T, derived from W's 16x16 tiles, equals quantizing W^T (rows padded to 16)."""
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(6)) * torch.logspace(-3, 3, k)
    derived = nvfp4.quantize(w, block=(16, 16)).transpose_tiles()
    direct = nvfp4.quantize(_pad(w.T.contiguous()), block=(16, 16))
    assert derived.shape == direct.shape
    assert torch.equal(derived.data, direct.data)
    assert torch.equal(derived.scale.view(torch.uint8), direct.scale.view(torch.uint8))
    assert torch.equal(derived.global_scale, direct.global_scale)
    with pytest.raises(ValueError, match="16x16 tiles"):
        nvfp4.quantize(w).transpose_tiles()


def test_weight_tiles_make_w_and_w_transpose_share_values():
    w = torch.randn(32, 48)
    assert torch.equal(nvfp4.quantize(w, block=(16, 16)).dequantize().T,
                       nvfp4.quantize(w.T.contiguous(), block=(16, 16)).dequantize())


def test_stochastic_gradient_rounding_is_unbiased_on_average():
    x, w, _, dy = _operands(m=32)
    grads = []
    for step in range(200):
        w.grad = None
        torch.manual_seed(step)
        nvfp4_linear(x, w, None, Recipe(rht_wgrad=False)).backward(dy)
        grads.append(x.grad.clone())
        x.grad = None
    mean = torch.stack(grads).mean(0)
    wq = nvfp4.quantize(w.detach(), block=(16, 16)).dequantize()
    target = dy @ wq  # what dgrad converges to once dy's rounding averages out
    single = (grads[0] - target).norm()
    assert (mean - target).norm() < single / 5


def test_activation_memory_saved_for_backward_shrinks():
    bf16, fp4 = saved_activation_bytes(4680, 1536)
    assert fp4 / bf16 < 0.3
