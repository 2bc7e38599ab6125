"""Decode-sized attention over the paged NVFP4 cache on Hopper (Gluon, sm_90 only): the
one-warpgroup kernel of ``attention_wgmma`` with each page's bytes copied into a shared-memory
ring by cp.async, ``RING - 1`` pages ahead, instead of held in registers one page ahead.

An experiment, not routed by ``paged_attention`` until the H100 says it pays. Why: the
twenty-fourth session's reading of the decode kernels (RESULTS.md) is that they are bound by the
bytes each SM has requested and not yet received. ``attention_wgmma`` keeps one page (~9 KB of K
and V bytes and scales) in flight per program, two programs per SM; more pages ahead in registers
would cost registers it does not have (227 per thread). cp.async copies land in shared memory and
hold no registers, so three pages ahead put ~55 KB in flight per SM for 27 KB more shared memory
per program (two programs still fit: ~100 KB each).

    page i:  copy of page i+RING-1's bytes issued (cp.async, one commit group per page)
             wait until page i's group has landed; its bytes -> registers (8 bytes per thread)
             then attention_wgmma's loop body: decode K -> shared, S = Q K^T (async wgmma),
             decode V -> shared, softmax, P.V (async wgmma)

The arithmetic is ``attention_wgmma``'s, helper for helper, so the outputs are bit-identical to
it at the same split count. Rows past a page's fill arrive as zeros (cp.async zero-fills a masked
copy), as ``_load_raw``'s masked loads give: a NaN E4M3 pattern can never reach the decode.

Not run by the CPU interpreter (Gluon has none): CPU tests compile it for sm_90; GPU tests compare
it with the reference and with ``attention_wgmma``.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma_wait

from .attention_wgmma import (NUM_WARPS, _attend_page, _byte_layout, _mma_layout, _operand_smem, _page_meta,
                              _page_range, _softmax_start, _tile_rows, _write_result, choose_splits, copy_rows_async,
                              launch_decode, read_ring_slot)

RING = 4          # pages of raw bytes in shared memory: RING - 1 in flight while one is decoded
MAX_RING = 5      # 9 KB per page at D = 128 next to 64 KB of Q and decoded tiles: two programs per SM fit


@gluon.jit
def _copy_page(rings, slot, kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, i, last, h, H,
               MAX_PAGES, qk_scale, S: gl.constexpr, D: gl.constexpr, num_warps: gl.constexpr):
    """Issue logical page ``i``'s copies (K and V, zeros from ``last`` on) into ring slot ``slot``
    as one commit group."""
    k_ring, kb_ring, v_ring, vb_ring = rings
    page, fill, _, _ = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, last, h, H, MAX_PAGES, qk_scale)
    row0 = _tile_rows(page, h, 0, H, S)   # a page's rows for one head: H apart in [P, S, H, ...]
    copy_rows_async(k_ring.index(slot), kb_ring.index(slot), kd_ptr, ks_ptr, row0, H, fill, 0, D // 2, D // 16,
                    S, D, num_warps)
    copy_rows_async(v_ring.index(slot), vb_ring.index(slot), vd_ptr, vs_ptr, row0, H, fill, 0, D // 2, D // 16,
                    S, D, num_warps)
    async_copy.commit_group()


@gluon.jit
def paged_decode_ring_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    ws_m_ptr, ws_l_ptr, ws_acc_ptr,
    Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh,
    D: gl.constexpr, S: gl.constexpr, SPLIT: gl.constexpr, RING: gl.constexpr, num_warps: gl.constexpr,
):
    pid_bh, split = gl.program_id(0), gl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    NB: gl.constexpr = D // 16
    L3: gl.constexpr = _byte_layout(num_warps, NB)
    mma_s: gl.constexpr = _mma_layout(num_warps, S)
    mma_o: gl.constexpr = _mma_layout(num_warps, D // 2)
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_o, k_width=2)
    raw: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])   # a slot's bytes row-major, no swizzle

    smem = _operand_smem(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, S, D, num_warps)
    rings = (gl.allocate_shared_memory(gl.uint8, [RING, S, D // 2], raw),
             gl.allocate_shared_memory(gl.uint8, [RING, S, NB], raw),
             gl.allocate_shared_memory(gl.uint8, [RING, S, D // 2], raw),
             gl.allocate_shared_memory(gl.uint8, [RING, S, NB], raw))
    k_ring, kb_ring, v_ring, vb_ring = rings

    m_i, l_i, acc_e, acc_o, tok_s, zeros_s = _softmax_start(S, D, mma_s, mma_o)
    first, last = _page_range(npages_ptr, b, split, PAGES_PER_SPLIT)
    for r in gl.static_range(RING - 1):   # pages first .. first + RING - 2 in flight
        _copy_page(rings, r, kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, first + r, last,
                   h, H, MAX_PAGES, qk_scale, S, D, num_warps)
    _, fill, k_mult, v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, first, last, h, H, MAX_PAGES,
                                         qk_scale)
    unit = gl.where(v_mult == 0.0, 1.0, v_mult)
    fence_async_shared()
    for i in range(first, last):
        j = i - first
        # page i + RING - 1 goes into the slot page i - 1 used (read into registers a page ago)
        _copy_page(rings, (j + RING - 1) % RING, kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr,
                   fills_ptr, b, i + RING - 1, last, h, H, MAX_PAGES, qk_scale, S, D, num_warps)
        async_copy.wait_group(RING - 1)      # page i's group has landed
        k_raw, k_bits = read_ring_slot(k_ring, kb_ring, j % RING, L3)
        v_raw, v_bits = read_ring_slot(v_ring, vb_ring, j % RING, L3)
        _, n_fill, n_k_mult, n_v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i + 1, last, h, H,
                                                   MAX_PAGES, qk_scale)
        m_i, l_i, unit, acc_e, acc_o = _attend_page((k_raw, k_bits, v_raw, v_bits), i % 2, smem, zeros_s, tok_s, fill,
                                                    k_mult, v_mult, m_i, l_i, unit, acc_e, acc_o, S, D, mma_o, p_op)
        fill, k_mult, v_mult = n_fill, n_k_mult, n_v_mult

    async_copy.wait_group(0)   # the copies of pages past the split's end (zeros) before exit
    acc_e, acc_o = warpgroup_mma_wait(num_outstanding=0, deps=(acc_e, acc_o))
    _write_result(acc_e, acc_o, m_i, l_i, unit, out_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr, b, h, pid_bh, split, Tq,
                  s_ob, s_ot, s_oh, D, SPLIT, mma_o)


def paged_decode_ring(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, npages,
                      scale: float | None = None, splits: int | None = None, out=None, ring: int = RING):
    """``attention_wgmma.paged_decode_wgmma``'s contract (q [B, Tq <= 64, H, D], cached K/V only) on
    the cp.async-ring kernel; ``ring`` (2 to MAX_RING) pages of raw bytes in shared memory, ``ring
    - 1`` of them in flight. Same default split count as ``paged_decode_wgmma`` (same residency)."""
    if not isinstance(ring, int) or not 2 <= ring <= MAX_RING:
        raise ValueError(f"ring: expected 2 to {MAX_RING} pages, got {ring!r}")
    b, _, h, _ = q.shape
    splits = choose_splits(b * h, table.shape[1], q.device) if splits is None else splits
    return launch_decode(paged_decode_ring_kernel, q, (k_data, k_scale, k_global, v_data, v_scale, v_global), table,
                         fills, npages, scale, splits, out, RING=ring, num_warps=NUM_WARPS)
