"""``quantize``: float tensors -> :class:`NVFP4Tensor`, exactly as NVFP4_SPEC.md defines.

This is the reference definition every backend is tested against; it favours
clarity over speed (several passes over memory, fp32 throughout).
"""

from __future__ import annotations

import torch

from .e2m1 import E2M1_MAX, e2m1_encode, e2m1_encode_stochastic, pack_nibbles
from .four_over_six import encode_four_over_six
from .hadamard import rht as apply_rht
from .scales import block_decode_scales, decode_scale, element_encode_multiplier, encode_scale_from_amax
from .tensor import BLOCK_1D, BLOCK_2D, BLOCK_SIZE, SUPPORTED_BLOCKS, NVFP4Tensor, padded_k

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NAN_POLICIES = ("raise", "propagate")


def _check_input(x: object, block: tuple[int, int], nan: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x: expected float32, bfloat16 or float16, got {x.dtype}")
    if not isinstance(block, (tuple, list)) or tuple(block) not in SUPPORTED_BLOCKS:
        raise ValueError(f"block: expected (1, 16) or (16, 16), got {block!r}")
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan: expected one of {NAN_POLICIES}, got {nan!r}")
    if x.dim() == 0:
        raise ValueError("x: expected at least one dimension (blocks run along the last one), got a 0-d tensor")
    if tuple(block) == BLOCK_2D:
        if x.dim() < 2:
            raise ValueError(f"block: (16, 16) tiles need a tensor of rank >= 2, x has shape {tuple(x.shape)}")
        if x.shape[-2] % BLOCK_SIZE:
            raise ValueError(
                f"x: block=(16, 16) needs the second-last dimension to be a multiple of 16, got shape {tuple(x.shape)}"
            )


def _resolve_amax(x: torch.Tensor, amax: float | torch.Tensor | None) -> torch.Tensor:
    if amax is None:
        return x.abs().nan_to_num(nan=0.0, posinf=float("inf")).amax().to(torch.float32)
    value = torch.as_tensor(amax, dtype=torch.float32, device=x.device)
    if value.numel() != 1:
        raise ValueError(f"amax: expected a scalar, got a tensor of shape {tuple(value.shape)}")
    value = value.reshape(())
    if torch.isnan(value) or value < 0:
        raise ValueError(f"amax: expected a non-negative number, got {float(value)}")
    return value


def _block_amax(blocks: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Max |x| per block. ``blocks`` is ``[..., M, Kp/16, 16]``; the result ``[..., M, Kp/16]``."""
    per_row = blocks.abs().nan_to_num(nan=0.0, posinf=float("inf")).amax(dim=-1)
    if tuple(block) != BLOCK_2D:
        return per_row
    *lead, m, nb = per_row.shape
    tiles = per_row.view(*lead, m // BLOCK_SIZE, BLOCK_SIZE, nb).amax(dim=-2, keepdim=True)
    return tiles.expand(*lead, m // BLOCK_SIZE, BLOCK_SIZE, nb).reshape(*lead, m, nb)


def _uniform_like(x: torch.Tensor, seed: int | None) -> torch.Tensor:
    """U[0, 1) draws for stochastic rounding: a counter-based hash of (seed, element index), so
    the same seed gives the same bits on every device and in every backend (see ``rounding_hash``)."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    index = torch.arange(x.numel(), dtype=torch.int64, device=x.device).view(x.shape)
    return rounding_uniform(index, seed)


_MASK32 = 0xFFFFFFFF


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h * c) mod 2^32 for h, c < 2^32, in int64 without overflow (16-bit halves)."""
    return ((h & 0xFFFF) * c + ((((h >> 16) * c) & 0xFFFF) << 16)) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finalizer: every input bit flips each output bit with p ~ 1/2."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def rounding_hash(index: torch.Tensor, seed: int) -> torch.Tensor:
    """32-bit hash of each element index (int64, < 2^32) under ``seed`` (< 2^64), as int64."""
    h = _fmix32((index & _MASK32) ^ (seed & _MASK32))
    return _fmix32(h ^ ((seed >> 32) & _MASK32))


def rounding_uniform(index: torch.Tensor, seed: int) -> torch.Tensor:
    """Stochastic rounding's U[0, 1) draw for each element index: the hash's top 24 bits / 2^24
    (exact in fp32). Element index = row * padded K + column of the (transformed) tensor."""
    return (rounding_hash(index, seed) >> 8).to(torch.float32) * (1.0 / 16777216.0)


def _empty(x: torch.Tensor, block: tuple[int, int], rht: bool) -> NVFP4Tensor:
    kp = padded_k(x.shape[-1])
    data = torch.empty(*x.shape[:-1], kp // 2, dtype=torch.uint8, device=x.device)
    scale = torch.empty(*x.shape[:-1], kp // BLOCK_SIZE, dtype=torch.float8_e4m3fn, device=x.device)
    one = torch.ones((), dtype=torch.float32, device=x.device)
    return NVFP4Tensor(data, scale, one, x.shape, tuple(block), rht)


def quantize(
    x: torch.Tensor,
    block: tuple[int, int] = (1, 16),
    amax: float | torch.Tensor | None = None,
    stochastic: bool = False,
    seed: int | None = None,
    rht: bool = False,
    *,
    nan: str = "raise",
    four_over_six: bool = False,
) -> NVFP4Tensor:
    """Quantize a float tensor to NVFP4 (E2M1 values, E4M3 block scales, FP32 tensor scale).

    Args:
        x: float32, bfloat16 or float16 tensor of any rank >= 1; blocks run along
            the last dimension, which is zero-padded to a multiple of 16. Need not
            be contiguous.
        block: ``(1, 16)`` for one scale per 16 consecutive elements, or
            ``(16, 16)`` for one scale per 16x16 tile of the last two dimensions
            (training weights, so W and W^T share values); the second-last
            dimension must then be a multiple of 16.
        amax: static per-tensor max |x| (e.g. from calibration); by default the
            tensor's own. Values beyond it saturate.
        stochastic: round E2M1 values stochastically (unbiased) instead of to
            nearest-even.
        seed: seed of the stochastic rounding draws; the same seed gives the same
            bits. ``None`` draws one from torch's global generator.
        rht: apply the 16-point random Hadamard transform along the last
            dimension before quantizing (undone by ``dequantize()``).
        nan: ``"raise"`` (default) rejects NaN with a ValueError; ``"propagate"``
            gives every block that holds a NaN a NaN scale, so its 16 values
            dequantize to NaN. ±Inf always saturates to ±6 x the block scale.
        four_over_six: choose each block's scale by Four Over Six (its max mapped to 4 or to
            6, whichever reconstructs it better; ``format.four_over_six``) instead of always
            6. The same format: only the chosen scales differ. Not with ``stochastic``.

    Returns:
        An :class:`NVFP4Tensor` with the logical shape of ``x``.
    """
    _check_input(x, block, nan)
    if four_over_six and stochastic:
        raise ValueError("four_over_six: chooses scales by reconstruction error, which stochastic rounding "
                         "makes random; use it with stochastic=False")
    block = tuple(block)
    if x.numel() == 0:
        return _empty(x, block, rht)

    xf = x.to(torch.float32)
    has_nan = torch.isnan(xf)
    if nan == "raise" and bool(has_nan.any()):
        raise ValueError("x: contains NaN; pass nan='propagate' to quantize it with NaN block scales")
    k, kp = x.shape[-1], padded_k(x.shape[-1])
    if kp != k:
        xf = torch.nn.functional.pad(xf, (0, kp - k))
    if rht:
        xf = apply_rht(xf)

    s_enc = encode_scale_from_amax(_resolve_amax(xf, amax))
    data, b, s_dec = _encode_blocks(xf, s_enc, block, stochastic, seed, four_over_six)
    if nan == "propagate" and bool(has_nan.any()):
        b = _poison_nan_blocks(b, xf.reshape(*xf.shape[:-1], kp // BLOCK_SIZE, BLOCK_SIZE))
    return NVFP4Tensor(data, b, s_dec, x.shape, block, rht)


def _encode_blocks(xf: torch.Tensor, s_enc: torch.Tensor, block: tuple[int, int], stochastic: bool = False,
                   seed: int | None = None, four_over_six: bool = False,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed E2M1, E4M3 block scales, S_dec) of fp32 ``xf`` (last dim a multiple of 16) under
    encode scale ``s_enc``: 0-d, or one per leading slice (broadcastable against the block scales)."""
    s_dec = decode_scale(s_enc)
    blocks = xf.reshape(*xf.shape[:-1], xf.shape[-1] // BLOCK_SIZE, BLOCK_SIZE)
    if four_over_six:
        codes, b = encode_four_over_six(blocks, _block_amax(blocks, block), s_enc, s_dec, tuple(block) == BLOCK_2D)
        return pack_nibbles(codes.flatten(-2)), b, s_dec
    b = block_decode_scales(_block_amax(blocks, block), s_enc)
    e = element_encode_multiplier(b, s_dec)
    scaled = torch.clamp(blocks * e.unsqueeze(-1), -E2M1_MAX, E2M1_MAX)
    if stochastic:
        codes = e2m1_encode_stochastic(scaled, _uniform_like(scaled, seed))
    else:
        codes = e2m1_encode(scaled)
    return pack_nibbles(codes.flatten(-2)), b, s_dec


def quantize_slices(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize each ``x[i]`` as a tensor of its own (its own amax and FP32 scale; 1x16 blocks,
    nearest rounding), all slices in one pass: bit-identical to ``quantize(x[i])`` for every i,
    without a launch sequence per slice (the KV cache's per-head scales).

    Returns (data [*x.shape[:-1], K/2] uint8, E4M3 scales [*x.shape[:-1], K/16], FP32 decode
    scales [x.shape[0]]), K the last dim padded to 16.
    """
    _check_input(x, BLOCK_1D, "raise")
    if x.dim() < 2 or x.numel() == 0:
        raise ValueError(f"x: expected non-empty slices along dim 0 of a tensor of rank >= 2, "
                         f"got shape {tuple(x.shape)}")
    xf = x.to(torch.float32)
    if bool(torch.isnan(xf).any()):
        raise ValueError("x: contains NaN")
    k, kp = x.shape[-1], padded_k(x.shape[-1])
    if kp != k:
        xf = torch.nn.functional.pad(xf, (0, kp - k))
    amax = xf.abs().nan_to_num(posinf=float("inf")).flatten(1).amax(1)   # as _resolve_amax, per slice
    s_enc = encode_scale_from_amax(amax).view(-1, *[1] * (xf.dim() - 1))
    data, b, s_dec = _encode_blocks(xf, s_enc, BLOCK_1D)
    return data, b, s_dec.flatten()


def _poison_nan_blocks(b: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    nan_block = torch.isnan(blocks).any(dim=-1)
    return torch.where(nan_block, torch.full_like(b, float("nan")), b)
