"""Decode-sized attention over the paged NVFP4 cache on Hopper, written in Gluon (sm_90 only).

The tensor-core kernel in ``attention.py`` (plain Triton) runs every page as one dependent chain:
decode K, store it to shared memory, wgmma, wait, softmax, decode V, store, wgmma, wait. With two
programs per SM nothing else runs meanwhile, so at 64 queries it was 0.65x flash SDPA over a bf16
cache while neither its instructions nor its bytes were near the H100's limits (RESULTS.md). Gluon
(Triton's layout-explicit dialect) lets this kernel choose the order itself:

    page i:  bytes of page i+1 requested (registers; its table entry was read a page earlier)
             decode K(i) -> shared;  S = Q K^T issued (async)        | tensor cores: S(i), PV(i-1)
             decode V(i) -> shared (second buffer)                   | run under the decode
             wait; softmax of S(i); accumulator rescaled
             PV(i) = P V(i) issued (async) into the accumulator, waited for on page i+1

One warpgroup (4 warps) owns 64 queries (padded) of one (sequence, head) and a split of its pages;
Q sits in shared memory. Partials go to the same workspace as ``attention.py``'s and
``combine_splits`` merges them. The head dimension is split into even and odd elements as there
(byte i holds elements 2i and 2i+1). H100 (RESULTS.md, twenty-first session): 1.4-1.9x faster than
the Triton kernel at 24-64 queries, slower at 16 and fewer (64 padded rows against its 16).

Each page has its own FP32 V decode scale, which cannot go into fp16 P (small weights would lose
bits) while P.V accumulates in place on the tensor cores. So the accumulator is kept in units of
the last page's V scale and moves to the next page's by their ratio, with the softmax correction.
A page whose V scale is 0 holds zeros: the unit stays and the page's P is dropped (its weights
still count in the softmax sum).

Not run by the CPU interpreter (Gluon has none): ``paged_attention`` routes here only on sm_90
GPUs; CPU tests compile it for sm_90, and the GPU tests compare it with the reference and the
plain Triton kernel.
"""

from __future__ import annotations

import math

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, warpgroup_mma,
                                                               warpgroup_mma_init, warpgroup_mma_wait)
from triton.runtime.jit import constexpr_function

from .numerics import DECODED_TILE_UNSCALE, E2M1_PAIRS_PTX

#: cp.async from global into shared memory (Gluon): Triton 3.6, the device's, names it
#: async_copy_global_to_shared; 3.9 async_load (same arguments: smem, pointers, mask).
async_load = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared

BLOCK_M = 64          # queries per program (the kernel's 64 rows): wgmma's minimum M for one warpgroup
NUM_WARPS = 4         # one warpgroup
RESIDENT_PER_SM = 2   # programs an SM holds at once (227 registers x 128 threads each)
LOG2E = 1.4426950408889634


@constexpr_function
def _byte_layout(num_warps, blocks):
    """[tokens, blocks, 8 bytes]: each thread holds one 16-element block (8 bytes, one 64-bit load)."""
    return gl.BlockedLayout([1, 1, 8], [32 // blocks, blocks, 1], [num_warps, 1, 1], [2, 1, 0])


@constexpr_function
def _mma_layout(num_warps, n):
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, n, 16])


# gl.max / gl.sum are Triton functions, which CPU test runs interpret and Gluon cannot then call
@gluon.jit
def _maximum(a, b):
    return gl.maximum(a, b)


@gluon.jit
def _add(a, b):
    return a + b


@gluon.jit
def copy_rows_async(data_ring, bits_ring, data_ptr, scale_ptr, row0, row_step, valid_rows, step, ROW_BYTES,
                    ROW_BLOCKS, ROWS: gl.constexpr, BLOCK_K: gl.constexpr, num_warps: gl.constexpr):
    """cp.async copies of an NVFP4 matrix's rows row0 + i x row_step (i < ROWS) at K step ``step`` into
    shared memory: packed bytes [ROWS, BLOCK_K/2] (16 bytes per copy) into ``data_ring`` and E4M3
    bits [ROWS, BLOCK_K/16] (4 bytes per copy) into ``bits_ring``. Rows from ``valid_rows`` on and
    K past the row (``ROW_BYTES`` bytes, ``ROW_BLOCKS`` scales) arrive as zeros. The copies need
    their global addresses aligned to their size: ROW_BYTES and ROW_BLOCKS multiples of 16 as the
    launcher specializes them (or constants that are)."""
    data_l: gl.constexpr = gl.BlockedLayout([1, 16], [32 // (BLOCK_K // 32), BLOCK_K // 32], [num_warps, 1], [1, 0])
    i = gl.arange(0, ROWS, layout=gl.SliceLayout(1, data_l))
    cols = step * (BLOCK_K // 2) + gl.arange(0, BLOCK_K // 2, layout=gl.SliceLayout(0, data_l))
    ok = gl.expand_dims(i < valid_rows, 1) & gl.expand_dims(cols < ROW_BYTES, 0)
    rows = (row0 + i.to(gl.int64) * row_step) * ROW_BYTES
    async_load(data_ring, data_ptr + gl.expand_dims(rows, 1) + gl.expand_dims(cols, 0), mask=ok)

    NB: gl.constexpr = BLOCK_K // 16
    bits_l: gl.constexpr = gl.BlockedLayout([1, 4], [32 // (NB // 4), NB // 4], [num_warps, 1], [1, 0])
    i_b = gl.arange(0, ROWS, layout=gl.SliceLayout(1, bits_l))
    blk = step * NB + gl.arange(0, NB, layout=gl.SliceLayout(0, bits_l))
    ok_b = gl.expand_dims(i_b < valid_rows, 1) & gl.expand_dims(blk < ROW_BLOCKS, 0)
    rows_b = (row0 + i_b.to(gl.int64) * row_step) * ROW_BLOCKS
    async_load(bits_ring, scale_ptr + gl.expand_dims(rows_b, 1) + gl.expand_dims(blk, 0), mask=ok_b)


@gluon.jit
def read_ring_slot(data_ring, bits_ring, slot, L3: gl.constexpr):
    """Slot ``slot`` of a ``copy_rows_async`` ring, landed, in registers as ``_load_raw`` returns a
    page: bytes [rows, K/16, 8] in ``L3`` and bits [rows, K/16]."""
    data = data_ring.index(slot)
    return data.reshape([data.shape[0], data.shape[1] // 8, 8]).load(L3), bits_ring.index(slot).load(gl.SliceLayout(2, L3))


@gluon.jit
def _tile_rows(page, head, tok, H, S: gl.constexpr):
    """Row index (token x head) of ``tok`` on ``page`` in the [P, S, H, ...] cache arrays."""
    return (page * S + tok) * H + head


@gluon.jit
def _load_raw(data_ptr, scale_ptr, page, head, fill, H, S: gl.constexpr, D: gl.constexpr,
              L3: gl.constexpr):
    """Packed bytes [S, D/16, 8] and E4M3 block-scale bits [S, D/16] of one page and head (zeros
    past ``fill``)."""
    NB: gl.constexpr = D // 16
    tok = gl.arange(0, S, layout=gl.SliceLayout(1, gl.SliceLayout(2, L3)))
    blk = gl.arange(0, NB, layout=gl.SliceLayout(0, gl.SliceLayout(2, L3)))
    byte = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3)))
    rows = _tile_rows(page, head, tok, H, S)
    ok = tok < fill
    rows2 = gl.expand_dims(rows, 1)
    ok2 = gl.expand_dims(ok, 1)
    block_start = gl.expand_dims(rows2 * (D // 2) + gl.expand_dims(blk, 0) * 8, 2)
    offs3 = block_start + gl.expand_dims(gl.expand_dims(byte, 0), 1)
    packed = gl.load(data_ptr + offs3, mask=gl.expand_dims(ok2, 2), other=0)
    bits = gl.load(scale_ptr + rows2 * NB + gl.expand_dims(blk, 0), mask=ok2, other=0)
    return packed, bits


@gluon.jit
def _decode_to_shared(packed, bits, even_smem, odd_smem, S: gl.constexpr, D: gl.constexpr):
    """Decode a raw page tile (``_load_raw``) to fp16 worth 2^-7 x E2M1 x E4M3 (exact) and store
    its even and odd head_dim elements, [S, D/2] each, for the tensor cores."""
    # numerics.decode_nvfp4_tile's arithmetic (same PTX), spelled in Gluon: a Gluon kernel cannot
    # call the interpreter's functions, which is what numerics' are in CPU test runs
    bits = bits.to(gl.int32)
    e4m3 = (((bits & 0x80) << 8) | ((bits & 0x7F) << 7)).to(gl.int16).to(gl.float16, bitcast=True)
    scale = gl.expand_dims(e4m3 * (256.0 * DECODED_TILE_UNSCALE), 2)  # E4M3 x 2^7, exact in fp16
    even, odd = gl.inline_asm_elementwise(E2M1_PAIRS_PTX, "=r,=r,=r,=r,r,r,r", [packed, scale],
                                          dtype=(gl.float16, gl.float16), is_pure=True, pack=4)
    even_smem.store(gl.reshape(even, [S, D // 2]))
    odd_smem.store(gl.reshape(odd, [S, D // 2]))


@gluon.jit
def _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, last, h, H, MAX_PAGES, qk_scale):
    """Physical page, fill and the K/V multipliers of logical page ``i`` (fill 0 past ``last``).
    Past a sequence's last page the table holds -1: page 0 stands in, so the scale loads stay
    inside the arrays and a split with no pages starts from a finite V unit (its fill is 0)."""
    live = i < last
    idx = b * MAX_PAGES + gl.minimum(i, MAX_PAGES - 1)
    page = gl.maximum(gl.load(table_ptr + idx), 0).to(gl.int64)
    fill = gl.where(live, gl.load(fills_ptr + idx), 0)
    k_mult = gl.load(kg_ptr + page * H + h) * (qk_scale * DECODED_TILE_UNSCALE)
    v_mult = gl.load(vg_ptr + page * H + h) * DECODED_TILE_UNSCALE
    return page, fill, k_mult, v_mult


@gluon.jit
def _load_q_half(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, parity, D: gl.constexpr, layout: gl.constexpr):
    rows = gl.arange(0, 64, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, D // 2, layout=gl.SliceLayout(0, layout))
    ptr = q_ptr + b.to(gl.int64) * s_qb + h * s_qh + gl.expand_dims(rows.to(gl.int64) * s_qt, 1) \
        + gl.expand_dims(2 * cols + parity, 0)
    return gl.load(ptr, mask=gl.expand_dims(rows < Tq, 1), other=0.0).to(gl.float16)


@gluon.jit
def _q_to_shared(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, D: gl.constexpr, num_warps: gl.constexpr):
    """The 64 (padded) query rows of (b, h) in fp16, even and odd head_dim halves, in shared memory
    as wgmma's A operands."""
    q_blocked: gl.constexpr = gl.BlockedLayout([1, 2], [4, 8], [num_warps, 1], [1, 0])
    q_smem: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, D // 2], gl.float16)
    q_e_smem = gl.allocate_shared_memory(gl.float16, [64, D // 2], q_smem,
                                         _load_q_half(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, 0, D, q_blocked))
    q_o_smem = gl.allocate_shared_memory(gl.float16, [64, D // 2], q_smem,
                                         _load_q_half(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, 1, D, q_blocked))
    return q_e_smem, q_o_smem


@gluon.jit
def _operand_smem(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, S: gl.constexpr, D: gl.constexpr, num_warps: gl.constexpr):
    """The one-warpgroup kernels' wgmma operands in shared memory, as ``_attend_page`` takes them: Q
    (``_q_to_shared``), one page's decoded K and a double buffer of decoded V, even and odd halves."""
    tile_smem: gl.constexpr = gl.NVMMASharedLayout.get_default_for([S, D // 2], gl.float16)
    q_e_smem, q_o_smem = _q_to_shared(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, D, num_warps)
    return (q_e_smem, q_o_smem,
            gl.allocate_shared_memory(gl.float16, [S, D // 2], tile_smem),
            gl.allocate_shared_memory(gl.float16, [S, D // 2], tile_smem),
            gl.allocate_shared_memory(gl.float16, [2, S, D // 2], tile_smem),
            gl.allocate_shared_memory(gl.float16, [2, S, D // 2], tile_smem))


@gluon.jit
def _store_half(base_ptr, rows, cols, row_stride, values, parity, Tq):
    ptr = base_ptr + gl.expand_dims(rows.to(gl.int64) * row_stride, 1) + gl.expand_dims(2 * cols + parity, 0)
    gl.store(ptr, values.to(base_ptr.dtype.element_ty), mask=gl.expand_dims(rows < Tq, 1))


@gluon.jit
def paged_decode_wgmma_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    ws_m_ptr, ws_l_ptr, ws_acc_ptr,
    Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh,
    D: gl.constexpr, S: gl.constexpr, SPLIT: gl.constexpr, num_warps: gl.constexpr,
):
    pid_bh, split = gl.program_id(0), gl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    L3: gl.constexpr = _byte_layout(num_warps, D // 16)
    mma_s: gl.constexpr = _mma_layout(num_warps, S)          # S = Q K^T: [64 queries, S tokens]
    mma_o: gl.constexpr = _mma_layout(num_warps, D // 2)     # P V (one half of head_dim): [64, D/2]
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_o, k_width=2)

    smem = _operand_smem(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, S, D, num_warps)

    m_i, l_i, acc_e, acc_o, tok_s, zeros_s = _softmax_start(S, D, mma_s, mma_o)
    first, last = _page_range(npages_ptr, b, split, PAGES_PER_SPLIT)
    page, fill, k_mult, v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, first, last, h, H,
                                            MAX_PAGES, qk_scale)
    unit = gl.where(v_mult == 0.0, 1.0, v_mult)
    k_raw, k_bits = _load_raw(kd_ptr, ks_ptr, page, h, fill, H, S, D, L3)
    v_raw, v_bits = _load_raw(vd_ptr, vs_ptr, page, h, fill, H, S, D, L3)
    n_page, n_fill, n_k_mult, n_v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, first + 1, last, h, H,
                                                    MAX_PAGES, qk_scale)
    fence_async_shared()
    for i in range(first, last):
        # the next page's bytes are requested first, to be decoded one page later
        nk_raw, nk_bits = _load_raw(kd_ptr, ks_ptr, n_page, h, n_fill, H, S, D, L3)
        nv_raw, nv_bits = _load_raw(vd_ptr, vs_ptr, n_page, h, n_fill, H, S, D, L3)
        m_i, l_i, unit, acc_e, acc_o = _attend_page((k_raw, k_bits, v_raw, v_bits), i % 2, smem, zeros_s, tok_s, fill,
                                                    k_mult, v_mult, m_i, l_i, unit, acc_e, acc_o, S, D, mma_o, p_op)
        k_raw, k_bits, v_raw, v_bits = nk_raw, nk_bits, nv_raw, nv_bits
        page, fill, k_mult, v_mult = n_page, n_fill, n_k_mult, n_v_mult
        n_page, n_fill, n_k_mult, n_v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i + 2, last, h, H,
                                                        MAX_PAGES, qk_scale)

    acc_e, acc_o = warpgroup_mma_wait(num_outstanding=0, deps=(acc_e, acc_o))
    _write_result(acc_e, acc_o, m_i, l_i, unit, out_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr, b, h, pid_bh, split, Tq,
                  s_ob, s_ot, s_oh, D, SPLIT, mma_o)


@gluon.jit
def _attend_page(raw, slot, smem, zeros_s, tok_s, fill, k_mult, v_mult, m_i, l_i, unit, acc_e, acc_o,
                 S: gl.constexpr, D: gl.constexpr, mma_o: gl.constexpr, p_op: gl.constexpr):
    """One page of the one-warpgroup kernels' loop, from its raw bytes (``_load_raw``'s (K bytes, K
    bits, V bytes, V bits)): decode K into shared memory and issue S = Q K^T (async); decode V into
    its double-buffer ``slot`` while the tensor cores run; then the softmax and P.V, issued async
    into the accumulators and waited for on the next page. ``smem``: (Q even, Q odd, K even, K odd,
    V even ring, V odd ring). Returns (m_i, l_i, unit, acc_e, acc_o)."""
    k_raw, k_bits, v_raw, v_bits = raw
    q_e_smem, q_o_smem, k_e_smem, k_o_smem, v_e_smem, v_o_smem = smem
    _decode_to_shared(k_raw, k_bits, k_e_smem, k_o_smem, S, D)
    fence_async_shared()
    s = warpgroup_mma(q_e_smem, k_e_smem.permute((1, 0)), zeros_s, use_acc=False, is_async=True)
    s = warpgroup_mma(q_o_smem, k_o_smem.permute((1, 0)), s, is_async=True)
    _decode_to_shared(v_raw, v_bits, v_e_smem.index(slot), v_o_smem.index(slot), S, D)
    fence_async_shared()
    s, acc_e, acc_o = warpgroup_mma_wait(num_outstanding=0, deps=(s, acc_e, acc_o))

    p16, m_i, l_i, unit, acc_e, acc_o = _softmax_page(s, tok_s, fill, k_mult, v_mult, m_i, l_i, unit, acc_e,
                                                      acc_o, mma_o, p_op)
    acc_e = warpgroup_mma(p16, v_e_smem.index(slot), acc_e, is_async=True)
    acc_o = warpgroup_mma(p16, v_o_smem.index(slot), acc_o, is_async=True)
    return m_i, l_i, unit, acc_e, acc_o


@gluon.jit
def _page_range(npages_ptr, b, split, PAGES_PER_SPLIT):
    """The logical pages [first, last) of sequence ``b`` that page split ``split`` reads."""
    first = split * PAGES_PER_SPLIT
    return first, gl.minimum(first + PAGES_PER_SPLIT, gl.load(npages_ptr + b))


@gluon.jit
def _softmax_start(S: gl.constexpr, D: gl.constexpr, mma_s: gl.constexpr, mma_o: gl.constexpr):
    """The online softmax's state before the first page (row max, row sum, the two halves of the
    output accumulator), with the token index and zero tile that each page's S = Q K^T uses. The
    accumulator holds sum(P V_tile x v_mult) / unit, unit = the v_mult of the last page read."""
    m_i = gl.full([64], float("-inf"), gl.float32, layout=gl.SliceLayout(1, mma_s))
    l_i = gl.full([64], 0.0, gl.float32, layout=gl.SliceLayout(1, mma_s))
    acc_e = warpgroup_mma_init(gl.full([64, D // 2], 0.0, gl.float32, layout=mma_o))
    acc_o = warpgroup_mma_init(gl.full([64, D // 2], 0.0, gl.float32, layout=mma_o))
    tok_s = gl.arange(0, S, layout=gl.SliceLayout(0, mma_s))
    zeros_s = gl.full([64, S], 0.0, gl.float32, layout=mma_s)
    return m_i, l_i, acc_e, acc_o, tok_s, zeros_s


@gluon.jit
def _softmax_page(s, tok_s, fill, k_mult, v_mult, m_i, l_i, unit, acc_e, acc_o, mma_o: gl.constexpr,
                  p_op: gl.constexpr):
    """One page's online-softmax step: the page's raw scores ``s`` [64, S] (tokens from ``fill`` on
    masked) -> its P in fp16 as the P.V wgmma's A operand, the new max and sum, and the
    accumulators moved to this page's V unit (rescaled by the softmax correction and the ratio of
    the units). Returns (p16, m_i, l_i, unit, acc_e, acc_o)."""
    s = gl.where(gl.expand_dims(tok_s < fill, 0), s * k_mult, float("-inf"))
    m_new = gl.maximum(m_i, gl.reduce(s, 1, _maximum))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s - gl.expand_dims(m_new, 1))
    l_i = l_i * alpha + gl.reduce(p, 1, _add)
    # a page whose V decode scale is 0 holds zeros: its P is dropped and the unit kept
    new_unit = gl.where(v_mult == 0.0, unit, v_mult)
    factor = gl.expand_dims(gl.convert_layout(alpha * (unit / new_unit), gl.SliceLayout(1, mma_o)), 1)
    acc_e = acc_e * factor
    acc_o = acc_o * factor
    p16 = gl.convert_layout(gl.where(v_mult == 0.0, 0.0, p).to(gl.float16), p_op)
    return p16, m_new, l_i, new_unit, acc_e, acc_o


@gluon.jit
def _write_result(acc_e, acc_o, m_i, l_i, unit, out_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr, b, h, pid_bh, split, Tq,
                  s_ob, s_ot, s_oh, D: gl.constexpr, SPLIT: gl.constexpr, mma_o: gl.constexpr):
    """The finished accumulators (in units of ``unit``) as the output rows, or, for a page split,
    as its partial (max, sum, accumulator) in ``attention.paged_attention_kernel``'s workspace
    layout [SPLITS, B*H, Tq] (+ D)."""
    acc_e = acc_e * unit
    acc_o = acc_o * unit
    rows = gl.arange(0, 64, layout=gl.SliceLayout(1, mma_o))
    cols = gl.arange(0, D // 2, layout=gl.SliceLayout(0, mma_o))
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, mma_o))
    if not SPLIT:
        o_base = out_ptr + b.to(gl.int64) * s_ob + h * s_oh
        inv = gl.expand_dims(1.0 / gl.where(l_o == 0.0, 1.0, l_o), 1)  # no keys read: 0, as SDPA (not NaN)
        _store_half(o_base, rows, cols, s_ot, acc_e * inv, 0, Tq)
        _store_half(o_base, rows, cols, s_ot, acc_o * inv, 1, Tq)
    else:
        base = (split * gl.num_programs(0) + pid_bh).to(gl.int64) * Tq
        m_o = gl.convert_layout(m_i, gl.SliceLayout(1, mma_o))
        gl.store(ws_m_ptr + base + rows, m_o, mask=rows < Tq)
        gl.store(ws_l_ptr + base + rows, l_o, mask=rows < Tq)
        acc_base = ws_acc_ptr + base * D
        _store_half(acc_base, rows, cols, D, acc_e, 0, Tq)
        _store_half(acc_base, rows, cols, D, acc_o, 1, Tq)


def choose_splits(rows: int, max_pages: int, device) -> int:
    """Page splits for ``rows`` (sequence, head) pairs: as many programs as the SMs hold at once
    (``RESIDENT_PER_SM``, set by the registers: 227 per thread, 4 warps), in one wave, and at least
    4 pages per split. H100 sweep (ab_decode_wgmma.py, 11/22/33/44 splits): best at 22 for 12
    heads and 11 for 24, i.e. 264 programs on 132 SMs; more splits cost their fp32 partials."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(round(RESIDENT_PER_SM * sms / rows), max_pages // 4))


def supports(q: torch.Tensor, page_size: int, has_new: bool) -> bool:
    """Whether ``paged_decode_wgmma`` takes this call: an sm_90 GPU, 2-64 queries, cached K/V only,
    64-token pages (one wgmma N block) and head_dim 64 or 128."""
    if not q.is_cuda or has_new or torch.cuda.get_device_capability(q.device)[0] != 9:
        return False
    _, tq, _, d = q.shape
    return 1 < tq <= BLOCK_M and page_size == 64 and d in (64, 128)


def paged_decode_wgmma(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, npages,
                       scale: float | None = None, splits: int | None = None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of ``q`` [B, Tq <= 64, H, D] over the pages in ``table``/``fills``; the contract
    and layouts of ``attention.paged_attention`` without fresh K/V."""
    b, _, h, _ = q.shape
    splits = choose_splits(b * h, table.shape[1], q.device) if splits is None else splits
    return launch_decode(paged_decode_wgmma_kernel, q, (k_data, k_scale, k_global, v_data, v_scale, v_global),
                         table, fills, npages, scale, splits, out, num_warps=NUM_WARPS)


def launch_decode(kernel, q, kv, table, fills, npages, scale, splits: int, out, **meta) -> torch.Tensor:
    """Launch a Gluon decode kernel with this module's argument list (``paged_decode_wgmma_kernel``'s,
    which ``attention_wgmma_ws`` shares) on (B*H, ``splits``) programs, then merge the splits'
    partials. ``kv``: the cache's (k_data, k_scale, k_global, v_data, v_scale, v_global); ``meta``:
    the kernel's own constexprs and launch options."""
    from .attention import combine_splits, split_workspace  # no cycle at import time

    k_data, k_scale, k_global, v_data, v_scale, v_global = kv
    b, tq, h, d = q.shape
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q) if out is None else out
    max_pages = table.shape[1]
    pages_per_split = triton.cdiv(max(max_pages, 1), splits)
    ws_m, ws_l, ws_acc = split_workspace(splits, b * h, tq, d, q.device)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kernel[(b * h, splits)](
        q, out, k_data, k_scale.view(torch.uint8), k_global, v_data, v_scale.view(torch.uint8), v_global,
        table, fills, npages, ws_m, ws_l, ws_acc,
        tq, h, max_pages, pages_per_split, scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        D=d, S=k_data.shape[1], SPLIT=splits > 1, **meta,
    )
    if splits > 1:
        combine_splits(ws_m, ws_l, ws_acc, out, splits)
    return out
