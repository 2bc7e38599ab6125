"""Four Over Six ("4/6"): an opt-in choice of block scale, in the same NVFP4 format.

The spec maps each block's max |x| to E2M1's largest value, 6. E2M1 has nothing between 4 and
6, so values at 67-100% of their block's max carry the largest errors. 4/6 (Cook et al., arXiv
2512.02010; TransformerEngine's and FlashInfer's ``4over6``, "MAE" mode with the 448 bound)
quantizes each block twice, with its max mapped to 6 and to 4, and keeps the candidate that
reconstructs the block with the smaller absolute error. Only the choice of the E4M3 scale
changes: the bytes decode exactly as NVFP4_SPEC.md says, by every kernel and checkpoint reader.

The choice, exactly (every backend matches it bit for bit):
```
v       = x_fp32 * S_enc                                  # the block in scale units
b6      = the spec's block scale: e4m3(clamp(block_amax * (S_enc * r6)))
b4      = e4m3(clamp(block_amax * (S_enc * 0.25)))        # max |x| -> 4 (clamped at 448 like b6)
q_c     = E2M1_round(clamp(x_fp32 * e_c, -6, 6))          # e_c from b_c as the spec says
err_c   = pairwise_sum(|E2M1_value(q_c) * float(b_c) - v|)   # q*b is exact in fp32: one rounding
keep b4 and q4 where err4 < err6; else (ties, NaN) b6 and q6
```
``pairwise_sum`` adds neighbours, 16 -> 8 -> 4 -> 2 -> 1 (elements 2i and 2i+1 first), so the
sum does not depend on a kernel's reduction order; a 16x16 tile then sums its 16 row errors
the same way. Absolute errors (not squares) keep every step a single rounding, which a compiler
cannot change by contracting a multiply and an add. Round-to-nearest only: with stochastic
rounding the error of a candidate is a random draw, not a property of the scale.
"""

from __future__ import annotations

import torch

from .e2m1 import E2M1_MAX, e2m1_decode, e2m1_encode
from .scales import RECIPROCAL_6, block_decode_scales, element_encode_multiplier

#: The other candidate: 1/4 where the spec has r6, so the block max maps to E2M1's 4 (exact in fp32).
RECIPROCAL_4 = torch.tensor(0.25, dtype=torch.float32)


def pairwise_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim (a power of two) in neighbour pairs: ((t0+t1)+(t2+t3))+... .
    Each addition has two operands, so the result is the same in every backend."""
    while t.shape[-1] > 1:
        t = t[..., 0::2] + t[..., 1::2]
    return t[..., 0]


def _candidate(blocks: torch.Tensor, block_amax: torch.Tensor, s_enc: torch.Tensor, s_dec: torch.Tensor,
               reciprocal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E2M1 codes [..., NB, 16], E4M3 scales [..., NB]) with the block max mapped to 1 / ``reciprocal``
    (RECIPROCAL_6: the spec's scales; RECIPROCAL_4)."""
    b = block_decode_scales(block_amax, s_enc, reciprocal)
    e = element_encode_multiplier(b, s_dec)
    return e2m1_encode(torch.clamp(blocks * e.unsqueeze(-1), -E2M1_MAX, E2M1_MAX)), b


def _block_error(codes: torch.Tensor, b: torch.Tensor, v: torch.Tensor, tiles_2d: bool) -> torch.Tensor:
    """Absolute reconstruction error per scale, in scale units: [..., NB] (1x16 blocks), or with
    ``tiles_2d`` each row's value holding its 16x16 tile's sum."""
    err = pairwise_sum((e2m1_decode(codes) * b.to(torch.float32).unsqueeze(-1) - v).abs())
    if not tiles_2d:
        return err
    *lead, m, nb = err.shape
    tiles = pairwise_sum(err.view(*lead, m // 16, 16, nb).transpose(-1, -2))     # [..., M/16, NB]
    return tiles.unsqueeze(-2).expand(*lead, m // 16, 16, nb).reshape(*lead, m, nb)


def encode_four_over_six(blocks: torch.Tensor, block_amax: torch.Tensor, s_enc: torch.Tensor,
                         s_dec: torch.Tensor, tiles_2d: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [..., NB, 16] uint8, E4M3 scales [..., NB]) of fp32 ``blocks`` [..., NB, 16]: per
    block (or 16x16 tile, ``tiles_2d``; ``block_amax`` then holds the tile's max on each row) the
    candidate with the smaller error, as the module docstring defines."""
    v = blocks * s_enc.unsqueeze(-1)  # s_enc 0-d or one per leading slice, as the block scales
    codes6, b6 = _candidate(blocks, block_amax, s_enc, s_dec, RECIPROCAL_6)
    codes4, b4 = _candidate(blocks, block_amax, s_enc, s_dec, RECIPROCAL_4)
    four = _block_error(codes4, b4, v, tiles_2d) < _block_error(codes6, b6, v, tiles_2d)
    codes = torch.where(four.unsqueeze(-1), codes4, codes6)
    bits = torch.where(four, b4.view(torch.uint8), b6.view(torch.uint8))
    return codes, bits.view(torch.float8_e4m3fn)
