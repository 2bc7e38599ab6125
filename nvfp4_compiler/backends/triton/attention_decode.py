"""Decode attention over a paged NVFP4 KV cache on CUDA cores: one query per program, no MMA.

Why a second kernel next to ``attention.py``: for one query the tensor-core kernel pads it to a
16-row MMA tile (16x the dot-product work), stages every decoded tile through shared memory for
the MMA, and holds ~225 registers per thread, which leaves 8 warps per SM (Nsight Compute, H100,
Tq=1). Here each program works on its K/V tiles in registers: no shared memory for operands, no
padded rows. Only Tq = 1 takes it (benchmarks/RESULTS.md: 1.70x / 1.86x flash SDPA at Wan-1.3B /
Wan-5B on an H100, sixteenth session). It is bound neither by the ~40 MB of pages it reads nor
by its instruction count alone: cutting the K side's instructions by half made it 3-4% faster,
and issuing each tile's loads one iteration ahead (with a tile re-tuned for the registers that
takes) another 4-6%. Nor is it short of warps: register caps that fit 2-3x the warps per SM moved
it by -17% to +7% (``benchmarks/sweep_decode_occupancy.py``, seventeenth session).

Work per program: one query row of one (sequence, head), over a contiguous run of that
sequence's pages (a split; flash-decoding), one tile of BLOCK_N token slots per iteration with the
next tile's loads (page table, then the page) already in flight: held in registers, one or two
tiles ahead, or (``staged``) as cp.async copies into a shared-memory ring up to three tiles ahead,
which holds no registers (the test of the loads-in-flight reading, RESULTS.md twenty-fourth and
twenty-sixth sessions; not yet timed, so not the default). The softmax state is kept per
token slot of the tile (reference max shared, sums and P.V accumulators per slot) and reduced
across slots once at the end; the state is rescaled lazily (only when the max grows by 2^8), not
on every tile. Each split writes an fp32 partial and takes an atomic ticket; the last split of a
query and head merges the partials itself (``attention.combine_row``, the merge the tensor-core
kernels launch as a second kernel), so one launch does the whole call.

Numerics. q.k: q becomes 24-bit integers per 16-element block (``fixed24_blocks``: off by at most
2^-22.4 of the block's max, close to fp32's precision there), and each block's dot product with the
K codes is exact in integers (``numerics.e2m1_block_dot_fixed24``: a byte table and dp4a, about 3
instructions per element where decoding to fp16 and fp32 FMAs took 5); the E4M3 block scales and
the page's FP32 decode scale apply in fp32. P.V: V decodes to exact fp16 (``decode_nvfp4_tile``),
P.V in fp32. The tensor-core kernel instead rounds q and P to fp16.

    q, out          [B, Tq, H, D]   bf16 / fp16 / fp32 (last dim contiguous)
    pages           as attention.py: k/v_data [P, S, H, D/2], k/v_scale [P, S, H, D/16], k/v_global [P, H]
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .attention import (INTERPRET, LOG2E, _num_sms, _page_entry, _split_pages, check_geometry, combine_block,
                        combine_row, softmax_denominator, split_workspace)
from .numerics import DECODED_TILE_UNSCALE, decode_nvfp4_tile, e2m1_block_dot_fixed24, e4m3_decode_f16
from .split_k import persistent_workspace


#: The lazily rescaled softmax state lets weights grow to 2^RESCALE_LOG2 before it rescales.
RESCALE_LOG2 = tl.constexpr(8.0)
#: q in 24-bit fixed point per 16-element block: integers in [-FIXED24_MAX, FIXED24_MAX].
FIXED24_MAX = tl.constexpr(2 ** 23 - 1)


@triton.jit
def _byte_words(x, NB: tl.constexpr):
    """int32 bytes [NB, 16] -> four int32 words [NB] each, word w holding bytes 4w..4w+3 (byte i
    of the word = element 4w + i)."""
    shifts = (tl.arange(0, 4) * 8).to(tl.int64)
    words = tl.sum(tl.reshape(x.to(tl.int64), (NB, 4, 4)) << shifts[None, None, :], 2).to(tl.int32)
    even, odd = tl.split(tl.reshape(words, (NB, 2, 2)))       # words 0, 2 and 1, 3
    w0, w2 = tl.split(even)
    w1, w3 = tl.split(odd)
    return w0, w1, w2, w3


@triton.jit
def fixed24_blocks(q, NB: tl.constexpr):
    """One query row (fp32 [NB * 16]) as 24-bit integers per 16-element block: q ~= step x x with
    |x| < 2^23. Returns the blocks' steps (fp32 [NB]) and x (int32 [NB, 16]). step x x is off by at
    most 1.5 steps, 2^-22.4 of the block's max (half a step each from the rounding to integers,
    from q / step in fp32 and from the step's own fp32 rounding times x): close to fp32's
    precision for the block's largest elements."""
    blocks = tl.reshape(q, (NB, 16))
    amax = tl.max(tl.abs(blocks), 1)
    inv_step = tl.where(amax > 0, FIXED24_MAX / amax, 0.0)
    x = tl.floor(blocks * inv_step[:, None] + 0.5).to(tl.int32)
    x = tl.minimum(tl.maximum(x, -8388607), 8388607)            # a q of inf or NaN: garbage, no overflow
    return amax / FIXED24_MAX, x


@triton.jit
def fixed24_words(x, NB: tl.constexpr):
    """24-bit integers [NB, 16] -> their three byte planes as the twelve word operands of
    ``numerics.e2m1_block_dot_fixed24`` (int32 [NB] each; top bytes signed)."""
    t0, t1, t2, t3 = _byte_words((x >> 16) & 0xFF, NB)
    m0, m1, m2, m3 = _byte_words((x >> 8) & 0xFF, NB)
    l0, l1, l2, l3 = _byte_words(x & 0xFF, NB)
    return t0, t1, t2, t3, m0, m1, m2, m3, l0, l1, l2, l3


@triton.jit
def _tile_fetch(kd_ptr, ks_ptr, vd_ptr, vs_ptr, table_ptr, fills_ptr, kg_ptr, vg_ptr, b, j, end, h, H, MAX_PAGES,
                qk_scale, S: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The loads of tile ``j`` of row ``b``'s pages (S // BLOCK_N tiles per page; tiles from
    ``end`` on are empty): which of its token slots hold tokens, the page's K and V multipliers
    (``_page_entry``), K's 16-element blocks (int64) and V's packed bytes, with their E4M3 bits."""
    tiles: tl.constexpr = S // BLOCK_N
    i = tl.maximum(tl.minimum(j, end - 1), 0) // tiles
    page, fill, k_mult, v_mult = _page_entry(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, h, H, MAX_PAGES, qk_scale)
    tok = (j % tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    tok_ok = tok < tl.where(j < end, fill, 0)
    row = (page * S + tok) * H + h                                          # int64 [BLOCK_N]
    blocks = tl.arange(0, D // 16)
    k_blocks = tl.load(kd_ptr + row[:, None] * (D // 16) + blocks[None, :], mask=tok_ok[:, None], other=0)
    k_bits = tl.load(ks_ptr + row[:, None] * (D // 16) + blocks[None, :], mask=tok_ok[:, None], other=0)
    v_packed = tl.load(vd_ptr + row[:, None] * (D // 2) + tl.arange(0, D // 2)[None, :], mask=tok_ok[:, None], other=0)
    v_bits = tl.load(vs_ptr + row[:, None] * (D // 16) + blocks[None, :], mask=tok_ok[:, None], other=0)
    return tok_ok, k_mult, v_mult, k_blocks, k_bits, v_packed, v_bits


@triton.jit
def _rows(x, like):
    """``x`` [C] repeated on every row of ``like`` [R, C]."""
    return tl.broadcast_to(x[None, :], like.shape)


@triton.jit
def block_dots(k_blocks, q_words):
    """Exact integer dot products of K's 16-element blocks (int64 [R, NB]) with the query's
    (``fixed24_words``): int32 [R, NB], each sum_j (2 x E2M1 code_j) x q_j."""
    t0, t1, t2, t3, m0, m1, m2, m3, l0, l1, l2, l3 = q_words
    b = k_blocks
    return e2m1_block_dot_fixed24(b, _rows(t0, b), _rows(t1, b), _rows(t2, b), _rows(t3, b), _rows(m0, b),
                                  _rows(m1, b), _rows(m2, b), _rows(m3, b), _rows(l0, b), _rows(l1, b),
                                  _rows(l2, b), _rows(l3, b))


@triton.jit
def _scores(k_blocks, k_bits, q_step, q_words):
    """q.k of a tile's tokens, fp32 [BLOCK_N], worth 2^-7 x the products of the decoded values (the
    unit of ``decode_nvfp4_tile``), without the page's FP32 scale. Each 16-block's dot product is
    exact in integers; the block scales apply in fp32."""
    dots = block_dots(k_blocks, q_words)
    # dots are of 2 x E2M1 values: 0.5 / DECODED_TILE_UNSCALE puts them in the decoded unit
    block_mult = e4m3_decode_f16(k_bits.to(tl.int32)).to(tl.float32) * (q_step * (0.5 / DECODED_TILE_UNSCALE))[None, :]
    return tl.sum(dots.to(tl.float32) * block_mult, 1)


@triton.jit
def _fold_tile(m_ref, l_i, acc_e, acc_o, tile, q_step, q_words):
    """Fold one tile (``_tile_fetch``'s loads) into the per-slot softmax state."""
    tok_ok, k_mult, v_mult, k_blocks, k_bits, v_packed, v_bits = tile
    s = tl.where(tok_ok, _scores(k_blocks, k_bits, q_step, q_words) * k_mult, float("-inf"))
    # Lazy rescaling: the state moves to a new reference max only when a score exceeds the
    # current one by 2^RESCALE_LOG2 (weights stay <= 2^8, harmless in fp32), so the usual
    # per-tile multiply of every accumulator (one FMUL per V element) is skipped on almost
    # every tile. The first tile of a split's first page holds a token, so it always moves.
    m_tile = tl.max(s, 0)
    if m_tile > m_ref + RESCALE_LOG2:
        alpha = tl.exp2(m_ref - m_tile)
        l_i = l_i * alpha
        acc_e = acc_e * alpha
        acc_o = acc_o * alpha
        m_ref = m_tile
    p = tl.exp2(s - m_ref)
    l_i = l_i + p
    v_e, v_o = decode_nvfp4_tile(v_packed, v_bits.to(tl.int32))
    pv = (p * v_mult)[:, None]
    acc_e = acc_e + pv * v_e.to(tl.float32)
    acc_o = acc_o + pv * v_o.to(tl.float32)
    return m_ref, l_i, acc_e, acc_o


@triton.jit
def paged_decode_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    ws_m_ptr, ws_l_ptr, ws_acc_ptr, tickets_ptr,
    Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh,
    D: tl.constexpr, S: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
    AHEAD: tl.constexpr, STAGED: tl.constexpr,
):
    row, pid_bh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    half = tl.arange(0, D // 2)
    q_row = q_ptr + b.to(tl.int64) * s_qb + row.to(tl.int64) * s_qt + h * s_qh
    q_step, q_int = fixed24_blocks(tl.load(q_row + tl.arange(0, D)).to(tl.float32), D // 16)
    q_words = fixed24_words(q_int, D // 16)

    m_ref = tl.full([], float("-inf"), tl.float32)        # reference max (log2 domain), shared by all slots
    l_i = tl.zeros((BLOCK_N,), tl.float32)                  # per slot: sum of 2^(s - m_ref)
    acc_e = tl.zeros((BLOCK_N, D // 2), tl.float32)         # per slot: sum of 2^(s - m_ref) x v
    acc_o = tl.zeros((BLOCK_N, D // 2), tl.float32)

    first, last = _split_pages(npages_ptr, b, split, PAGES_PER_SPLIT)
    j_end = last * (S // BLOCK_N)
    j0 = first * (S // BLOCK_N)
    # Each tile's loads (page table, then the page) go out AHEAD tiles before the tile is used, so
    # that they overlap the arithmetic of the tiles before it and more bytes are in flight per SM.
    if STAGED:
        # By Triton's software pipeliner: the page loads become cp.async copies into a ring of
        # AHEAD + 1 tiles in shared memory, so the bytes in flight hold no registers (tl.range's
        # num_stages asks for it; without it Triton pipelines only loops that feed a tl.dot).
        for j in tl.range(j0, j_end, num_stages=AHEAD + 1):
            tile = _tile_fetch(kd_ptr, ks_ptr, vd_ptr, vs_ptr, table_ptr, fills_ptr, kg_ptr, vg_ptr, b, j, j_end, h,
                               H, MAX_PAGES, qk_scale, S, D, BLOCK_N)
            m_ref, l_i, acc_e, acc_o = _fold_tile(m_ref, l_i, acc_e, acc_o, tile, q_step, q_words)
    else:
        # By hand, in registers (AHEAD is 1 or 2).
        tile = _tile_fetch(kd_ptr, ks_ptr, vd_ptr, vs_ptr, table_ptr, fills_ptr, kg_ptr, vg_ptr, b, j0, j_end, h, H,
                           MAX_PAGES, qk_scale, S, D, BLOCK_N)
        if AHEAD == 2:
            after = _tile_fetch(kd_ptr, ks_ptr, vd_ptr, vs_ptr, table_ptr, fills_ptr, kg_ptr, vg_ptr, b, j0 + 1,
                                j_end, h, H, MAX_PAGES, qk_scale, S, D, BLOCK_N)
        for j in range(j0, j_end):
            upcoming = _tile_fetch(kd_ptr, ks_ptr, vd_ptr, vs_ptr, table_ptr, fills_ptr, kg_ptr, vg_ptr, b, j + AHEAD,
                                   j_end, h, H, MAX_PAGES, qk_scale, S, D, BLOCK_N)
            m_ref, l_i, acc_e, acc_o = _fold_tile(m_ref, l_i, acc_e, acc_o, tile, q_step, q_words)
            if AHEAD == 2:
                tile = after
                after = upcoming
            else:
                tile = upcoming

    l_sum = softmax_denominator(tl.sum(l_i, 0))
    out_e = tl.sum(acc_e, 0)
    out_o = tl.sum(acc_o, 0)
    o_row = out_ptr + b.to(tl.int64) * s_ob + row.to(tl.int64) * s_ot + h * s_oh
    if not SPLIT:
        tl.store(o_row + 2 * half, (out_e / l_sum).to(out_ptr.dtype.element_ty))
        tl.store(o_row + 2 * half + 1, (out_o / l_sum).to(out_ptr.dtype.element_ty))
    else:
        # partials [SPLITS, B*H, Tq] (+ D): an empty split leaves max = -inf, sum = 0, acc = 0
        base = (split * tl.num_programs(1) + pid_bh).to(tl.int64) * Tq + row
        tl.store(ws_m_ptr + base, m_ref)
        tl.store(ws_l_ptr + base, l_sum)
        tl.store(ws_acc_ptr + base * D + 2 * half, out_e)
        tl.store(ws_acc_ptr + base * D + 2 * half + 1, out_o)
        # The last split of this query and head to finish merges all partials, so no second
        # launch is needed. A barrier puts every thread's stores before the one thread's acq_rel
        # ticket (release is cumulative), which the last program acquires; it leaves the ticket 0.
        tl.debug_barrier()
        ticket_ptr = tickets_ptr + pid_bh * Tq + row
        if tl.atomic_add(ticket_ptr, 1) == tl.num_programs(2) - 1:
            combine_row(ws_m_ptr, ws_l_ptr, ws_acc_ptr, o_row, row, pid_bh, Tq, tl.num_programs(1),
                        tl.num_programs(2), D, SPLIT_BLOCK)
            tl.store(ticket_ptr, 0)


#: Most tiles ``staged`` loads may run ahead (a ring of MAX_STAGED_AHEAD + 1 tiles in shared memory:
#: 18 KB per program at the (32, 2) tile).
MAX_STAGED_AHEAD = 3
#: Programs per SM the split count aims for (H100 sweep, benchmarks/RESULTS.md).
PROGRAMS_PER_SM = 4


def default_decode_tile(page_size: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps): token slots per tile and warps per program. H100, sixteenth session
    (benchmarks/ab_decode_attention.py): (32, 2) at 4 programs per SM was the best or within 2%
    of the best of 15 tile x programs-per-SM points at both Wan caches."""
    if INTERPRET:
        return min(page_size, 16), 1
    return min(page_size, 32), 2


def choose_decode_splits(programs: int, max_pages: int, device, programs_per_sm: int = PROGRAMS_PER_SM) -> int:
    """Split each sequence's pages so that about ``programs_per_sm`` programs run per SM, with at
    least 2 pages per split: a split's partial (2 + D fp32 per query) then stays under 3% of the
    page bytes it reads (D/2 + D/16 bytes per token, K and V, 64-token pages)."""
    want = programs_per_sm * _num_sms(device)
    return int(max(1, min(-(-want // max(programs, 1)), max_pages // 2)))


def _check_decode_tile(tile, page_size: int) -> tuple[int, int]:
    ok = isinstance(tile, tuple) and len(tile) == 2 and all(isinstance(v, int) and v > 0 and not v & (v - 1) for v in tile)
    if not ok or page_size % tile[0]:
        raise ValueError(f"tile: expected (BLOCK_N, num_warps), powers of two with BLOCK_N dividing the page size "
                         f"{page_size}; got {tile!r}")
    return tile


def paged_decode_attention(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, npages,
                           scale: float | None = None, splits: int | None = None, out: torch.Tensor | None = None,
                           tile: tuple[int, int] | None = None, ahead: int = 1, staged: bool = False,
                           programs_per_sm: int = PROGRAMS_PER_SM) -> torch.Tensor:
    """Attention of each query row of ``q`` over the pages in ``table``/``fills`` (no fresh K/V),
    one program per (query, sequence, head, split); see the module docstring for layouts.
    ``splits`` forces the page split, ``out`` receives the result, ``tile`` = (BLOCK_N, num_warps)
    overrides ``default_decode_tile``, ``ahead`` sets how many tiles ahead the loads are issued
    (held in registers: 1 or 2; ``staged``: 1 to MAX_STAGED_AHEAD tiles copied into shared memory
    by cp.async) and ``programs_per_sm`` aims the default split count (tuning)."""
    most = MAX_STAGED_AHEAD if staged else 2
    if not isinstance(ahead, int) or not 1 <= ahead <= most:
        raise ValueError(f"ahead: expected 1 to {most} tiles{' (staged)' if staged else ''}, got {ahead!r}")
    b, tq, h, d = q.shape
    page_size = k_data.shape[1]
    check_geometry(page_size, d)
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q) if out is None else out
    block_n, warps = default_decode_tile(page_size) if tile is None else _check_decode_tile(tile, page_size)
    max_pages = table.shape[1]
    splits = choose_decode_splits(tq * b * h, max_pages, q.device, programs_per_sm) if splits is None else splits
    pages_per_split = triton.cdiv(max(max_pages, 1), splits)
    ws_m, ws_l, ws_acc = split_workspace(splits, b * h, tq, d, q.device)
    tickets = combine_tickets(q.device, b * h * tq) if splits > 1 else ws_m
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    paged_decode_kernel[(tq, b * h, splits)](
        q, out, k_data.view(torch.int64), k_scale.view(torch.uint8), k_global, v_data, v_scale.view(torch.uint8), v_global,
        table, fills, npages, ws_m, ws_l, ws_acc, tickets,
        tq, h, max_pages, pages_per_split, scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        D=d, S=page_size, BLOCK_N=block_n, SPLIT=splits > 1, SPLIT_BLOCK=combine_block(splits), AHEAD=ahead,
        STAGED=staged,
        num_warps=warps, num_stages=1,
    )
    return out


def combine_tickets(device: torch.device, count: int) -> torch.Tensor:
    """``count`` int32 tickets, zero between calls (each call's last split program zeroes its own):
    one per (query, sequence, head), counting the splits that have written their partial."""
    return persistent_workspace(device, count, owner="decode_attention_tickets").view(torch.int32)
