"""Four Over Six block scales in Triton: the reference's ``format.four_over_six``, bit for bit.

Per block (or 16x16 tile) of ``blocks`` [R, NB, 16] (fp32, after any RHT): both candidates (max
-> 6, max -> 4), each one's absolute reconstruction error in scale units summed in neighbour
pairs (the reference's order, so no reduction order of the compiler's enters), and the
candidate with the smaller error (ties: 6). Memory traffic is the spec kernel's, but the work in
registers is more than doubled: on the H100 it took 2.5-2.9x the spec kernel's GPU time at the
Wan activation shapes (CUDA graphs, bench_quantize.py --four-over-six, RESULTS.md sixteenth
session).
"""

import triton
import triton.language as tl

from .numerics import R6, block_scale_candidate, e2m1_encode, e2m1_value


@triton.jit
def pairwise_sum16(t, R: tl.constexpr, NB: tl.constexpr):
    """[R, NB, 16] -> [R, NB]: ((t0 + t1) + (t2 + t3)) + ..., the reference's ``pairwise_sum``."""
    a, b = tl.split(tl.reshape(t, (R, NB, 8, 2)))
    a, b = tl.split(tl.reshape(a + b, (R, NB, 4, 2)))
    a, b = tl.split(tl.reshape(a + b, (R, NB, 2, 2)))
    a, b = tl.split(a + b)
    return a + b


@triton.jit
def _candidate(blocks, v, block_amax, s_enc, s_dec, RECIPROCAL: tl.constexpr, R: tl.constexpr,
               NB: tl.constexpr, TILE_ROWS: tl.constexpr):
    """(codes [R, NB, 16], scale bits [R, NB], error [R, NB]; with 16x16 tiles each row holds
    its tile's error) of one candidate."""
    b_bits, b_value, encode = block_scale_candidate(block_amax, s_enc, s_dec, RECIPROCAL)
    codes = e2m1_encode(blocks * encode[:, :, None])
    # q * b is exact in fp32, so a fused multiply-add rounds the difference as the reference does.
    err = pairwise_sum16(tl.abs(e2m1_value(codes) * b_value[:, :, None] - v), R, NB)
    if TILE_ROWS == 16:
        tiles = pairwise_sum16(tl.permute(tl.reshape(err, (R // 16, 16, NB)), (0, 2, 1)), R // 16, NB)
        err = tl.reshape(tl.broadcast_to(tiles[:, None, :], (R // 16, 16, NB)), (R, NB))
    return codes, b_bits, err


@triton.jit
def encode_four_over_six(blocks, block_amax, s_enc, s_dec, R: tl.constexpr, NB: tl.constexpr,
                         TILE_ROWS: tl.constexpr):
    """(E2M1 codes [R, NB, 16] int32, E4M3 scale bits [R, NB] int32) with each block's (tile's)
    scale chosen by Four Over Six. ``block_amax`` [R, NB] holds a tile's max on each of its rows."""
    v = blocks * s_enc
    codes6, bits6, err6 = _candidate(blocks, v, block_amax, s_enc, s_dec, R6, R, NB, TILE_ROWS)
    codes4, bits4, err4 = _candidate(blocks, v, block_amax, s_enc, s_dec, 0.25, R, NB, TILE_ROWS)
    four = err4 < err6
    return tl.where(four[:, :, None], codes4, codes6), tl.where(four, bits4, bits6)
