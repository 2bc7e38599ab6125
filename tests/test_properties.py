"""Property tests (hypothesis): error bound, idempotence, unbiased stochastic rounding."""

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nvfp4_compiler as nvfp4
from nvfp4_compiler.format import element_encode_multiplier, unpack_nibbles

finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
shapes = st.tuples(st.integers(1, 4), st.integers(1, 70))
finite_arrays = shapes.flatmap(lambda s: arrays(np.float32, s, elements=finite_f32))


def _error_bound(x: torch.Tensor, q: nvfp4.NVFP4Tensor) -> torch.Tensor:
    """Per-element worst case of |x - dequantize(quantize(x))|.

    Inside a block with decode scale d = b * S_dec, rounding to the E2M1 grid costs at most half
    its widest gap (2 -> 1 * d); b is within 1/16 of block_amax * S_enc / 6 (3 mantissa bits), so
    d <= block_amax * 17 / 96; a subnormal or underflowed b adds at most 6 * 2^-10 * S_dec.
    A 1e-5 relative margin covers fp32 rounding of the products.
    """
    kp = q.padded_k
    xp = torch.nn.functional.pad(x.float(), (0, kp - x.shape[-1])).view(*x.shape[:-1], -1, 16)
    block_amax = xp.abs().amax(-1, keepdim=True)
    if q.block == (16, 16):
        block_amax = block_amax.view(-1, 16, *block_amax.shape[-2:]).amax(1, keepdim=True)
        block_amax = block_amax.expand(-1, 16, -1, -1).reshape(*xp.shape[:-1], 1)
    bound = block_amax * 17 / 96 + 6 * 2**-10 * q.global_scale
    bound = bound * (1 + 1e-5) + 1e-38  # fp32 denormal floor
    return bound.expand_as(xp).flatten(-2)[..., : x.shape[-1]]


@settings(max_examples=200, deadline=None)
@given(finite_arrays)
def test_roundtrip_error_within_format_bound(x_np):
    x = torch.from_numpy(x_np)
    q = nvfp4.quantize(x)
    err = (q.dequantize() - x.float()).abs()
    assert torch.isfinite(q.dequantize()).all()
    assert (err <= _error_bound(x, q)).all()


@settings(max_examples=200, deadline=None)
@given(finite_arrays, st.sampled_from([(1, 16), (16, 16)]))
def test_quantize_is_idempotent_on_its_own_output(x_np, block):
    x = torch.from_numpy(x_np)
    if block == (16, 16):
        x = x.repeat(16, 1)  # 16 rows so tiles fit
    q = nvfp4.quantize(x, block=block)
    # Below amax ~ 3e-35, S_enc is clamped to FLT_MAX and S_dec = 1 / S_enc is an fp32 denormal:
    # dequantized values then lose bits and re-quantizing cannot be exact (a limit of fp32 scales).
    assume(float(q.global_scale) >= torch.finfo(torch.float32).tiny or float(x.abs().max()) == 0)
    q2 = nvfp4.quantize(q.dequantize(), block=block)
    # Blocks whose E4M3 scale is normal (>= 2^-6) always hold a code of magnitude 6, so
    # re-quantizing finds the same scale and codes bit for bit. A zero scale stays zero (its
    # codes are don't-cares: x * FLT_MAX saturates them, and they dequantize to 0). A subnormal
    # scale (2^-9 steps) can leave a block's largest code below 6, and the re-quantized scale may
    # then round to a neighbouring subnormal: there only the error bound holds.
    normal, zero = q.scale.float() >= 2**-6, q.scale.float() == 0
    codes, codes2 = (unpack_nibbles(t.data).view(*t.scale.shape, 16) for t in (q, q2))
    assert torch.equal(codes[normal], codes2[normal])
    assert torch.equal(q.scale.view(torch.uint8)[normal], q2.scale.view(torch.uint8)[normal])
    assert q2.scale.float()[zero].eq(0).all()
    # The per-tensor scale is recomputed from the dequantized amax: equal up to its last fp32 bits.
    assert torch.allclose(q2.global_scale, q.global_scale, rtol=1e-6, atol=0)
    deq = q.dequantize()
    assert ((q2.dequantize() - deq).abs() <= _error_bound(deq, q2)).all()


@settings(max_examples=20, deadline=None)
@given(arrays(np.float32, (32,), elements=st.floats(-100, 100, width=32)), st.integers(0, 2**31))
def test_stochastic_rounding_mean_converges_to_x(row_np, seed):
    n = 4000
    x = torch.from_numpy(row_np).expand(n, -1).contiguous()  # identical rows: identical scales
    q = nvfp4.quantize(x, stochastic=True, seed=seed)
    deq = q.dequantize()
    d = (q.scale.float() * q.global_scale)[0].repeat_interleave(16)  # decode scale per element
    e = element_encode_multiplier(q.scale[0], q.global_scale).repeat_interleave(16)
    target = torch.clamp(x[0] * e, -6, 6) * d  # what unbiased rounding preserves (the spec clamps first)
    sigma = d  # widest E2M1 gap / 2 = 1 unit of d
    assert ((deq.mean(0) - target).abs() <= 5 * sigma / n**0.5 + 1e-5 * x[0].abs()).all()


def test_stochastic_rounding_is_reproducible_per_seed():
    x = torch.randn(64, 64)
    a = nvfp4.quantize(x, stochastic=True, seed=7)
    b = nvfp4.quantize(x, stochastic=True, seed=7)
    c = nvfp4.quantize(x, stochastic=True, seed=8)
    assert torch.equal(a.data, b.data)
    assert not torch.equal(a.data, c.data)
