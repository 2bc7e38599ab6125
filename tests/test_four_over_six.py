"""Four Over Six block scales (``format.four_over_six``): the reference against an independent numpy
+ ml_dtypes implementation, the Triton kernel against the reference bit for bit, and what the
choice is for (a smaller reconstruction error than the spec's scale, never a larger one per block)."""

import numpy as np
import pytest
import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler.backends.triton import quantize as tquant
from nvfp4_compiler.format import e2m1_decode, unpack_nibbles
from nvfp4_compiler.format.four_over_six import pairwise_sum

from spec_numpy import quantize_four_over_six as numpy_four_over_six
from test_triton_backend import DEVICE, ON_GPU, _quantize_poisoned


def _inputs(shape, seed):
    """Gaussian, heavy-tailed and flat regions, so that both candidates win somewhere, for 1x16
    blocks and for 16x16 tiles (flat tiles: most of their values near the max)."""
    gen = torch.Generator().manual_seed(seed)
    heavy = torch.distributions.StudentT(3.0).sample(shape)
    flat = (0.6 + 0.4 * torch.rand(shape, generator=gen)) * torch.randn(shape, generator=gen).sign()
    pick = torch.rand(shape, generator=gen)
    x = torch.where(pick < 0.4, torch.randn(shape, generator=gen), heavy)
    if len(shape) >= 2 and shape[-2] >= 32:  # the second half of the rows flat
        x[..., shape[-2] // 2:, :] = flat[..., shape[-2] // 2:, :]
    return x


def _values(q: nvfp4.NVFP4Tensor) -> torch.Tensor:
    return e2m1_decode(unpack_nibbles(q.data))


@pytest.mark.parametrize("tile_rows", [1, 16])
def test_reference_equals_independent_numpy(tile_rows):
    x = _inputs((64, 256), seed=tile_rows)
    q = nvfp4.quantize(x, block=(tile_rows, 16), four_over_six=True)
    values, scales, s_dec = numpy_four_over_six(x.numpy(), tile_rows)
    assert np.array_equal(q.scale.view(torch.uint8).numpy(), scales)
    assert np.array_equal(_values(q).numpy(), values)
    assert float(q.global_scale) == s_dec
    fours = (q.scale.view(torch.uint8) != nvfp4.quantize(x, block=(tile_rows, 16)).scale.view(torch.uint8)).float()
    assert 0.02 < float(fours.mean()) < 0.98  # both candidates are taken: the test sees the choice


def test_choice_never_reconstructs_a_block_worse():
    x = _inputs((128, 512), seed=3)
    six = nvfp4.quantize(x).dequantize(torch.float32)
    four_six = nvfp4.quantize(x, four_over_six=True).dequantize(torch.float32)
    err6 = (six - x).abs().view(128, 32, 16).sum(-1)
    err46 = (four_six - x).abs().view(128, 32, 16).sum(-1)
    assert bool((err46 <= err6 * (1 + 1e-5) + 1e-30).all())
    mse6, mse46 = float((six - x).square().mean()), float((four_six - x).square().mean())
    assert mse46 < 0.95 * mse6, (mse46, mse6)  # ~8-16% lower on these inputs


def test_pairwise_sum_adds_neighbours_first():
    t = torch.tensor([1.0, 2.0**-24, 2.0**-24, 1.0])  # (1 + u) + (u + 1) rounds differently from 1 + u + u + 1
    assert float(pairwise_sum(t)) == float((t[0] + t[1]) + (t[2] + t[3]))
    assert float(pairwise_sum(torch.arange(16.0))) == 120.0


def test_four_over_six_rejects_stochastic_rounding():
    with pytest.raises(ValueError, match="four_over_six"):
        nvfp4.quantize(torch.randn(4, 16), stochastic=True, seed=1, four_over_six=True)
    with pytest.raises(ValueError, match="four_over_six"):
        tquant.quantize(torch.randn(4, 16, device=DEVICE), None, seed=1, four_over_six=True)


SHAPES = [(1, 16), (3, 20), (32, 64), (2, 16, 48), (48, 130)] + ([(4680, 1536), (1536, 8960)] if ON_GPU else [])
#: 16x16 tiles need a multiple of 16 rows (the API rejects other shapes)
CASES = [(shape, tile_rows) for shape in SHAPES for tile_rows in (1, 16)
         if tile_rows == 1 or (len(shape) >= 2 and shape[-2] % 16 == 0)]


@pytest.mark.parametrize("shape,tile_rows", CASES)
@pytest.mark.parametrize("rht", [False, True])
def test_triton_bit_identical_to_reference(shape, tile_rows, rht):
    x = (_inputs(shape, seed=sum(shape)) * 3.0).to(torch.bfloat16)
    d, s, g = _quantize_poisoned(x.to(DEVICE), None, tile_rows, rht=rht, four_over_six=True)
    ref = nvfp4.quantize(x, block=(tile_rows, 16), rht=rht, four_over_six=True)
    assert torch.equal(d.cpu(), ref.data)
    assert torch.equal(s.view(torch.uint8).cpu(), ref.scale.view(torch.uint8))
    assert torch.equal(g.cpu(), ref.global_scale)
