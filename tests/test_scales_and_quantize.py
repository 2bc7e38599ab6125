"""Scales and the whole quantizer against hand-computed bytes and an independent numpy/ml_dtypes twin."""

import ml_dtypes
import numpy as np
import pytest
import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler.format.scales import (
    FLT_MAX,
    block_decode_scales,
    decode_scale,
    element_encode_multiplier,
    encode_scale_from_amax,
)
from spec_numpy import quantize_1x16 as numpy_quantize


def test_encode_scale_edge_cases():
    assert float(encode_scale_from_amax(torch.tensor(2688.0))) == 1.0
    assert float(encode_scale_from_amax(torch.tensor(0.0))) == FLT_MAX
    assert float(encode_scale_from_amax(torch.tensor(float("inf")))) == 1.0


def test_block_scales_round_like_ml_dtypes_e4m3():
    amax = torch.rand(20000) * 3000
    ours = block_decode_scales(amax, torch.tensor(1.0)).view(torch.uint8).numpy()
    r6 = np.float32(1) / np.float32(6)
    theirs = np.clip(amax.numpy() * r6, -448, 448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(ours, theirs)


def test_block_scale_saturates_at_448_and_underflows_to_zero():
    b = block_decode_scales(torch.tensor([1e6, 2688.0, 6 * 2**-10, 6 * 2**-11]), torch.tensor(1.0))
    # 6*2^-10 / 6 = 2^-10 is half the smallest E4M3 subnormal (2^-9): a tie, rounds to even (0).
    assert b.float().tolist() == [448.0, 448.0, 0.0, 0.0]
    assert float(block_decode_scales(torch.tensor([6 * 1.5 * 2**-9]), torch.tensor(1.0)).float()) == 2**-8


def test_zero_block_scale_gives_flt_max_multiplier():
    e = element_encode_multiplier(torch.zeros(1, dtype=torch.float8_e4m3fn), decode_scale(torch.tensor(1.0)))
    assert float(e) == FLT_MAX


def _one_tensor_with_three_blocks():
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=torch.float32)
    block_a = torch.cat([grid, -grid]) * 448  # amax 2688 -> S_enc = 1, b = 448
    block_b = torch.ones(16)  # b = e4m3(1/6) = 0.171875, x * e = 5.82 -> 6
    ties = torch.tensor([0.125, 0.375, 0.625, 0.875, 1.25, 1.75, 2.5, 3.0])
    block_c = torch.cat([ties, -ties])  # amax 3 -> b = 0.5, e = 2: every value lands on a tie
    return torch.cat([block_a, block_b, block_c])


def test_quantize_hand_computed_bytes():
    q = nvfp4.quantize(_one_tensor_with_three_blocks())
    assert float(q.global_scale) == 1.0
    assert q.scale.float().tolist() == [448.0, 0.171875, 0.5]
    expected = [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]  # codes 0..15 in order
    expected += [0x77] * 8  # all 6.0
    # ties x2 = 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 6 -> 0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6 -> codes 0,2,2,4,4,6,6,7
    expected += [0x20, 0x42, 0x64, 0x76, 0xA8, 0xCA, 0xEC, 0xFE]
    assert q.data.tolist() == expected
    assert q.dequantize()[16:32].tolist() == [6 * 0.171875] * 16


def test_quantize_matches_independent_numpy_twin():
    gen = torch.Generator().manual_seed(0)
    for x in [
        torch.randn(64, 128, generator=gen),
        torch.randn(8, 64, generator=gen) * torch.logspace(-8, 8, 64),  # wide block dynamic range
        torch.randn(4, 4, 32, generator=gen) * 1e-30,
        torch.randn(16, 32, generator=gen) * 1e30,
    ]:
        q = nvfp4.quantize(x)
        data, scales, s_dec = numpy_quantize(x.numpy())
        np.testing.assert_array_equal(q.data.numpy(), data)
        np.testing.assert_array_equal(q.scale.view(torch.uint8).numpy(), scales)
        assert float(q.global_scale) == float(s_dec)


def test_all_zeros_tensor():
    q = nvfp4.quantize(torch.zeros(4, 32))
    assert q.data.eq(0).all() and q.scale.float().eq(0).all()
    assert q.dequantize().eq(0).all()
    assert float(q.global_scale) == pytest.approx(1 / FLT_MAX)


def test_negative_zeros_keep_their_sign_bit():
    q = nvfp4.quantize(torch.full((16,), -0.0))
    assert q.data.tolist() == [0x88] * 8


def test_static_amax_zero_and_inf():
    x = torch.randn(2, 32)
    q0 = nvfp4.quantize(x, amax=0.0)  # S_enc = FLT_MAX: every block scale saturates at 448
    assert q0.scale.float().eq(448).all()
    qi = nvfp4.quantize(x, amax=float("inf"))  # S_enc = 1
    assert float(qi.global_scale) == 1.0
    np.testing.assert_array_equal(qi.scale.float().numpy(), np.clip(
        x.abs().view(2, 2, 16).amax(-1).numpy() * (np.float32(1) / np.float32(6)), 0, 448
    ).astype(ml_dtypes.float8_e4m3fn).astype(np.float32))


def test_static_amax_saturates_values_beyond_it():
    x = torch.tensor([10.0] + [1.0] * 15)
    q = nvfp4.quantize(x, amax=2.0)
    assert q.dequantize()[0] == pytest.approx(2.0, rel=0.07)


def test_inf_saturates_and_other_blocks_survive():
    x = torch.cat([torch.tensor([float("inf"), -float("inf")]), torch.zeros(14), torch.full((16,), 6.0)])
    deq = nvfp4.quantize(x).dequantize()
    assert deq[0] == 2688.0 and deq[1] == -2688.0  # 6 x 448 x S_dec, S_dec = 1 when amax = inf
    assert torch.isfinite(deq).all()
    assert deq[16:].eq(6.0).all()


def test_padding_of_k_matches_explicit_zero_padding():
    x = torch.randn(3, 20)
    q = nvfp4.quantize(x)
    q_pad = nvfp4.quantize(torch.nn.functional.pad(x, (0, 12)))
    assert q.padded_k == 32 and q.shape == (3, 20)
    assert torch.equal(q.data, q_pad.data) and torch.equal(q.scale.view(torch.uint8), q_pad.scale.view(torch.uint8))
    assert torch.equal(q.global_scale, q_pad.global_scale)  # padding never changes amax
    assert q.dequantize().shape == (3, 20)
    assert "K padded 20->32" in repr(q)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_equal_their_fp32_values(dtype):
    x = torch.randn(8, 64).to(dtype)
    a, b = nvfp4.quantize(x), nvfp4.quantize(x.float())
    assert torch.equal(a.data, b.data) and torch.equal(a.global_scale, b.global_scale)


def test_non_contiguous_input_is_handled():
    x = torch.randn(64, 48)
    xt = x.T  # [48, 64], non-contiguous
    assert not xt.is_contiguous()
    assert torch.equal(nvfp4.quantize(xt).data, nvfp4.quantize(xt.contiguous()).data)


def test_higher_rank_blocks_run_along_last_dim():
    x = torch.randn(2, 3, 4, 48)
    q = nvfp4.quantize(x)
    assert q.data.shape == (2, 3, 4, 24) and q.scale.shape == (2, 3, 4, 3)
    flat = nvfp4.quantize(x.reshape(-1, 48))
    assert torch.equal(q.data.reshape(-1, 24), flat.data)


def test_16x16_tiles_share_one_scale_and_transpose_exactly():
    w = torch.randn(32, 48)
    q = nvfp4.quantize(w, block=(16, 16))
    scales = q.scale.float()
    assert q.scale.shape == (32, 3)
    for r in range(32):  # every row of a tile holds the tile's scale
        assert torch.equal(scales[r], scales[r // 16 * 16])
    qt = nvfp4.quantize(w.T.contiguous(), block=(16, 16))
    assert torch.equal(q.dequantize().T, qt.dequantize())


def test_16x16_tile_scale_is_the_tile_amax():
    w = torch.ones(16, 16)
    w[15, 15] = 12.0  # one large element in the tile sets the scale of all 16 rows
    q = nvfp4.quantize(w, block=(16, 16))
    assert q.scale.float().unique().tolist() == [448.0]


def test_empty_tensor_returns_empty_nvfp4_tensor():
    q = nvfp4.quantize(torch.empty(0, 20))
    assert q.shape == (0, 20) and q.data.shape == (0, 16) and q.scale.shape == (0, 2)
    assert q.dequantize().shape == (0, 20)


@pytest.mark.parametrize("bad", [torch.arange(16), torch.zeros(16, dtype=torch.complex64), torch.zeros(16, dtype=torch.bool)])
def test_non_float_dtypes_are_type_errors_naming_x(bad):
    with pytest.raises(TypeError, match="x: expected float32"):
        nvfp4.quantize(bad)


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        nvfp4.quantize([1.0] * 16)
    with pytest.raises(ValueError, match="block"):
        nvfp4.quantize(torch.randn(16), block=(1, 32))
    with pytest.raises(ValueError, match="second-last dimension"):
        nvfp4.quantize(torch.randn(20, 32), block=(16, 16))
    with pytest.raises(ValueError, match="block"):
        nvfp4.quantize(torch.randn(32), block=(16, 16))
    with pytest.raises(ValueError, match="amax"):
        nvfp4.quantize(torch.randn(16), amax=-1.0)
    with pytest.raises(ValueError, match="0-d"):
        nvfp4.quantize(torch.tensor(1.0))


def test_nan_raises_by_default_and_propagates_on_request():
    x = torch.randn(2, 32)
    x[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nvfp4.quantize(x)
    deq = nvfp4.quantize(x, nan="propagate").dequantize()
    assert torch.isnan(deq[0, :16]).all()
    assert torch.isfinite(deq[0, 16:]).all() and torch.isfinite(deq[1]).all()


def test_nbytes_and_repr():
    q = nvfp4.quantize(torch.randn(128, 256))
    assert q.nbytes == 128 * 128 + 128 * 16 + 4
    assert "shape=(128, 256)" in repr(q) and "1x16" in repr(q)


def test_quantize_slices_equals_quantizing_each_slice():
    """One pass with a scale per slice is bit-identical to quantizing every slice on its own,
    across very different magnitudes, an all-zero slice and a K that needs padding."""
    from nvfp4_compiler.format import quantize, quantize_slices

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(7, 5, 40, generator=gen) * torch.tensor([1e-3, 1.0, 300.0, 0.0, 5e4])[None, :, None]
    x = base.to(torch.bfloat16).transpose(0, 1)  # [5, 7, 40] bf16, a non-contiguous view (as the KV cache passes)
    assert not x.is_contiguous()
    data, scale, glob = quantize_slices(x)
    for i in range(x.shape[0]):
        want = quantize(x[i])
        assert torch.equal(data[i], want.data)
        assert torch.equal(scale[i].view(torch.uint8), want.scale.view(torch.uint8))
        assert torch.equal(glob[i], want.global_scale)
    with pytest.raises(ValueError, match="x:"):
        quantize_slices(torch.randn(16))
    with pytest.raises(ValueError, match="NaN"):
        quantize_slices(torch.full((2, 16), float("nan")))
