"""E2M1: the 4-bit NVFP4 element, its rounding, and nibble packing.

Codes are 4 bits: bit 3 is the sign, bits 0-2 index the magnitudes
``0, 0.5, 1, 1.5, 2, 3, 4, 6``. Two codes share a byte: element ``2i`` in the
low nibble, element ``2i+1`` in the high nibble (NVFP4_SPEC.md, "Element").
"""

from __future__ import annotations

import torch

#: Magnitude of each 3-bit index; the value of a code is ``±E2M1_MAGNITUDES[code & 7]``.
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
SIGN_BIT = 0x8

# Round-to-nearest-even decision points between neighbouring magnitudes. A value
# exactly on a point goes to the even index, so "strictly greater" is used where
# the upper neighbour is odd and "greater or equal" where it is even:
#   |x| <= 0.25 -> 0; < 0.75 -> 0.5; <= 1.25 -> 1; < 1.75 -> 1.5; <= 2.5 -> 2;
#   < 3.5 -> 3; <= 5 -> 4; else 6.
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _code_table(device: torch.device) -> torch.Tensor:
    """Signed value of each of the 16 codes, fp32, on ``device``."""
    mags = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float32, device=device)
    return torch.cat([mags, -mags])


def e2m1_round_magnitude_index(abs_x: torch.Tensor) -> torch.Tensor:
    """Index 0..7 of the nearest magnitude to ``abs_x`` (fp32, >= 0), ties to even, saturating."""
    idx = torch.zeros_like(abs_x, dtype=torch.uint8)
    for i, mid in enumerate(_MIDPOINTS):
        # Index i+1 is odd when i is even: ties (== mid) must stay below it.
        above = abs_x > mid if i % 2 == 0 else abs_x >= mid
        idx += above.to(torch.uint8)
    return idx


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """Round fp32 ``x`` to E2M1 codes (uint8 in 0..15), one code per element.

    Values beyond ±6 saturate. The sign bit is copied from the input's sign bit,
    as the hardware conversion does, so ``-0.0`` and negatives that round to zero
    give code 8 (-0). NaN must be filtered by the caller.
    """
    idx = e2m1_round_magnitude_index(x.abs())
    sign = torch.signbit(x).to(torch.uint8) << 3
    return idx | sign


def e2m1_decode(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Value of each E2M1 code (uint8 0..15) as ``dtype``."""
    return _code_table(codes.device)[codes.long()].to(dtype)


def e2m1_encode_stochastic(x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Stochastically round fp32 ``x`` (already within ±6) to E2M1 codes.

    Each magnitude rounds up to the next E2M1 magnitude with probability equal to
    its distance from the lower neighbour over the gap, so the expected decoded
    value equals ``x`` (unbiased). ``uniform`` holds one U[0, 1) draw per element.
    """
    abs_x = x.abs().clamp(max=E2M1_MAX)
    mags = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float32, device=x.device)
    # Lower neighbour: the largest magnitude <= |x|.
    lower = (torch.bucketize(abs_x, mags, right=True) - 1).clamp(0, 6)
    lo = mags[lower]
    hi = mags[lower + 1]
    p_up = (abs_x - lo) / (hi - lo)
    idx = lower + (uniform < p_up).to(lower.dtype)
    sign = torch.signbit(x).to(torch.uint8) << 3
    return idx.to(torch.uint8) | sign


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack uint8 codes ``[..., K]`` (K even) into bytes ``[..., K/2]``, element 2i in the low nibble."""
    if codes.shape[-1] % 2:
        raise ValueError(f"codes: last dimension must be even to pack, got {codes.shape[-1]}")
    low, high = codes[..., 0::2], codes[..., 1::2]
    return (low | (high << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: bytes ``[..., K/2]`` -> codes ``[..., K]``."""
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], dim=-1).flatten(-2)
