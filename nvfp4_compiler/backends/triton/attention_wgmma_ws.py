"""Decode-sized attention over the paged NVFP4 cache on Hopper, warp-specialized (Gluon, sm_90 only).
An experiment, not routed by ``paged_attention``: on the H100 it measured no faster than
``attention_wgmma`` (RESULTS.md, twenty-fourth session), which points at the loads in flight per
SM rather than the decode's place on the warps; ``AHEAD`` > 1 (not yet timed) tests that.

``attention_wgmma.py`` runs each page as one chain in one warpgroup: decode K and V into shared
memory, wgmma, softmax. Its asynchronous wgmma overlaps the tensor cores with the decode, but the
decode and the softmax still take turns on the same warps, and at 227 registers per thread an SM
holds two such warpgroups: Nsight Compute (H100, Tq = 64) saw each scheduler issue on 45% of
cycles with 0.62 eligible warps (RESULTS.md, twenty-first session). Here the two jobs run on
different warps, FlashAttention-3's structure with a decoding producer:

    producer warps (worker partition)        consumer warpgroup (default partition)
    load page i+1's bytes (registers)        wait ready[i]
    wait empty[slot of page i]               S = Q K(i)^T (async wgmma), wait (and P.V(i-1))
    decode K(i), V(i) -> shared ring slot    release the slot of page i-1 (empty)
    fence, arrive ready[i]                   softmax, rescale, P.V(i) (async wgmma)

The ring holds ``NBUF`` pages of decoded K and V (fp16, even and odd head-dim halves, 32 KB per
page at D = 128). The consumer reads each page's fill and FP32 scales itself (scalar loads). The
arithmetic is ``attention_wgmma``'s, helper for helper (same decode, same V-unit bookkeeping, same
partials), so the two kernels give the same values up to the order of the same fp32 operations.

Not run by the CPU interpreter (Gluon has none): CPU tests compile it for sm_90; GPU tests compare
it with the reference and with ``attention_wgmma``.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, warpgroup_mma,
                                                               warpgroup_mma_wait)

from .attention_wgmma import (_byte_layout, _decode_to_shared, _load_raw, _mma_layout, _page_meta, _page_range,
                              _q_to_shared, _softmax_page, _softmax_start, _write_result, launch_decode)

CONSUMER_WARPS = 4     # one warpgroup: wgmma's unit
# Registers, compiled for sm_90 on the CPU machine with Triton 3.6 (the device's) and 16-byte
# aligned pointers as launched (tests/sm90_compile.py): the consumer needs ~160 per thread. 8
# decode warps at 128 each fit 168 x 12 warps (one program per SM) with no spills at one to three
# pages ahead. 4 decode warps at 96 (two programs per SM, 128 x 8 warps each) spill 136 bytes.
# (Compiled without the alignment, the page bytes were loaded one at a time, and three pages
# ahead seemed to need 152 registers, 4 warps at 96 to spill ~480 bytes.)
# The defaults are the configuration measured on the H100 (RESULTS.md, twenty-fourth session):
# no faster than attention_wgmma, so paged_attention does not route here;
# benchmarks/device_ahead.sh times two and three pages ahead.
PRODUCER_WARPS = 8     # decode warps (a worker partition)
PRODUCER_REGS = 128    # registers per producer thread (setmaxnreg); the consumer gets the rest
MAX_REGS = 168         # per thread at launch, over all (4 + PRODUCER_WARPS) warps
NBUF = 2               # decoded pages in the shared-memory ring (32 KB each at D = 128)
AHEAD = 1              # pages whose bytes the producer has requested beyond the one it decodes


@gluon.jit
def _load_page(kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, i, last, h, H, MAX_PAGES,
               qk_scale, S: gl.constexpr, D: gl.constexpr, L3: gl.constexpr):
    """Logical page ``i``'s K and V bytes and block-scale bits (zeros from ``last`` on)."""
    page, fill, _, _ = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, last, h, H, MAX_PAGES, qk_scale)
    k_raw, k_bits = _load_raw(kd_ptr, ks_ptr, page, h, fill, H, S, D, L3)
    v_raw, v_bits = _load_raw(vd_ptr, vs_ptr, page, h, fill, H, S, D, L3)
    return k_raw, k_bits, v_raw, v_bits


@gluon.jit
def _hand_over(raw, j, k_e_ring, k_o_ring, v_e_ring, v_o_ring, ready, empty, S: gl.constexpr, D: gl.constexpr,
               NBUF: gl.constexpr):
    """Decode the split's ``j``-th page (``raw``) into its ring slot once the consumer has freed
    it, and signal the consumer."""
    k_raw, k_bits, v_raw, v_bits = raw
    slot = j % NBUF
    mbarrier.wait(empty.index(slot), ((j // NBUF) & 1) ^ 1)   # a fresh barrier passes phase 1
    _decode_to_shared(k_raw, k_bits, k_e_ring.index(slot), k_o_ring.index(slot), S, D)
    _decode_to_shared(v_raw, v_bits, v_e_ring.index(slot), v_o_ring.index(slot), S, D)
    fence_async_shared()   # generic-proxy stores, then the consumer's wgmma (async proxy) reads
    mbarrier.arrive(ready.index(slot), count=1)


@gluon.jit
def _producer(kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
              k_e_ring, k_o_ring, v_e_ring, v_o_ring, ready, empty, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
              D: gl.constexpr, S: gl.constexpr, NBUF: gl.constexpr, WARPS: gl.constexpr, AHEAD: gl.constexpr):
    """Decode the split's pages into the ring, in order, with the bytes of the next ``AHEAD`` pages
    (1-3) requested before waiting for a slot. The hypothesis this tests: the loads in flight per
    SM, not where the decode runs, set the speed (Little's law); one page ahead measured the same
    as the one-warpgroup kernel, which keeps about as many bytes in flight per SM."""
    pid_bh, split = gl.program_id(0), gl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    L3: gl.constexpr = _byte_layout(WARPS, D // 16)
    first, last = _page_range(npages_ptr, b, split, PAGES_PER_SPLIT)
    r0 = _load_page(kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, first, last, h, H,
                    MAX_PAGES, qk_scale, S, D, L3)
    if AHEAD >= 2:
        r1 = _load_page(kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, first + 1, last, h,
                        H, MAX_PAGES, qk_scale, S, D, L3)
    else:
        r1 = r0
    if AHEAD >= 3:
        r2 = _load_page(kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, first + 2, last, h,
                        H, MAX_PAGES, qk_scale, S, D, L3)
    else:
        r2 = r0
    for i in range(first, last):
        # r0 holds page i, r1.. pages i+1 .. i+AHEAD-1: request page i+AHEAD, then decode page i
        nxt = _load_page(kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, b, i + AHEAD, last,
                         h, H, MAX_PAGES, qk_scale, S, D, L3)
        _hand_over(r0, i - first, k_e_ring, k_o_ring, v_e_ring, v_o_ring, ready, empty, S, D, NBUF)
        if AHEAD == 1:
            r0 = nxt
        elif AHEAD == 2:
            r0, r1 = r1, nxt
        else:
            r0, r1, r2 = r1, r2, nxt


@gluon.jit
def _consumer(q_e_smem, q_o_smem, k_e_ring, k_o_ring, v_e_ring, v_o_ring, ready, empty,
              out_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr,
              Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale, s_ob, s_ot, s_oh,
              D: gl.constexpr, S: gl.constexpr, NBUF: gl.constexpr, SPLIT: gl.constexpr, num_warps: gl.constexpr):
    """S = Q K^T, the online softmax and P.V over the ring's pages (``attention_wgmma``'s loop body,
    with the decode replaced by waiting for the producer), then the output or the split's partial."""
    pid_bh, split = gl.program_id(0), gl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    mma_s: gl.constexpr = _mma_layout(num_warps, S)
    mma_o: gl.constexpr = _mma_layout(num_warps, D // 2)
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_o, k_width=2)

    m_i, l_i, acc_e, acc_o, tok_s, zeros_s = _softmax_start(S, D, mma_s, mma_o)
    first, last = _page_range(npages_ptr, b, split, PAGES_PER_SPLIT)
    _, fill, k_mult, v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, first, last, h, H, MAX_PAGES,
                                         qk_scale)
    unit = gl.where(v_mult == 0.0, 1.0, v_mult)
    for i in range(first, last):
        _, n_fill, n_k_mult, n_v_mult = _page_meta(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i + 1, last, h, H,
                                                   MAX_PAGES, qk_scale)
        j = i - first
        slot = j % NBUF
        mbarrier.wait(ready.index(slot), (j // NBUF) & 1)
        s = warpgroup_mma(q_e_smem, k_e_ring.index(slot).permute((1, 0)), zeros_s, use_acc=False, is_async=True)
        s = warpgroup_mma(q_o_smem, k_o_ring.index(slot).permute((1, 0)), s, is_async=True)
        s, acc_e, acc_o = warpgroup_mma_wait(num_outstanding=0, deps=(s, acc_e, acc_o))
        # P.V of the previous page is done: its slot goes back to the producer
        mbarrier.arrive(empty.index((j + NBUF - 1) % NBUF), count=1, pred=j > 0)

        p16, m_i, l_i, unit, acc_e, acc_o = _softmax_page(s, tok_s, fill, k_mult, v_mult, m_i, l_i, unit, acc_e,
                                                          acc_o, mma_o, p_op)
        acc_e = warpgroup_mma(p16, v_e_ring.index(slot), acc_e, is_async=True)
        acc_o = warpgroup_mma(p16, v_o_ring.index(slot), acc_o, is_async=True)
        fill, k_mult, v_mult = n_fill, n_k_mult, n_v_mult

    acc_e, acc_o = warpgroup_mma_wait(num_outstanding=0, deps=(acc_e, acc_o))
    _write_result(acc_e, acc_o, m_i, l_i, unit, out_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr, b, h, pid_bh, split, Tq,
                  s_ob, s_ot, s_oh, D, SPLIT, mma_o)


@gluon.jit
def paged_decode_ws_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    ws_m_ptr, ws_l_ptr, ws_acc_ptr,
    Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh,
    D: gl.constexpr, S: gl.constexpr, SPLIT: gl.constexpr, NBUF: gl.constexpr, PRODUCER_WARPS: gl.constexpr,
    PRODUCER_REGS: gl.constexpr, AHEAD: gl.constexpr, num_warps: gl.constexpr,
):
    pid_bh = gl.program_id(0)
    b, h = pid_bh // H, pid_bh % H
    tile_smem: gl.constexpr = gl.NVMMASharedLayout.get_default_for([S, D // 2], gl.float16)
    q_e_smem, q_o_smem = _q_to_shared(q_ptr, b, h, Tq, s_qb, s_qt, s_qh, D, num_warps)
    k_e_ring = gl.allocate_shared_memory(gl.float16, [NBUF, S, D // 2], tile_smem)
    k_o_ring = gl.allocate_shared_memory(gl.float16, [NBUF, S, D // 2], tile_smem)
    v_e_ring = gl.allocate_shared_memory(gl.float16, [NBUF, S, D // 2], tile_smem)
    v_o_ring = gl.allocate_shared_memory(gl.float16, [NBUF, S, D // 2], tile_smem)
    ready = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NBUF):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    fence_async_shared()   # Q's stores before the consumer's wgmma reads them

    gl.warp_specialize([
        (_consumer, (q_e_smem, q_o_smem, k_e_ring, k_o_ring, v_e_ring, v_o_ring, ready, empty,
                     out_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr,
                     Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale, s_ob, s_ot, s_oh, D, S, NBUF, SPLIT, num_warps)),
        (_producer, (kd_ptr, ks_ptr, vd_ptr, vs_ptr, kg_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
                     k_e_ring, k_o_ring, v_e_ring, v_o_ring, ready, empty, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
                     D, S, NBUF, PRODUCER_WARPS, AHEAD)),
    ], [PRODUCER_WARPS], [PRODUCER_REGS])


def resident_per_sm(producer_warps: int = PRODUCER_WARPS, max_regs: int = MAX_REGS) -> int:
    """Programs an SM holds at once: 64 K registers over ``max_regs`` x (4 + producer) warps' threads
    (shared memory, 16 KB + NBUF x 32 KB per program, allows more)."""
    return max(1, 65536 // (max_regs * 32 * (CONSUMER_WARPS + producer_warps)))


def choose_splits(rows: int, max_pages: int, device, resident: int | None = None) -> int:
    """Page splits for ``rows`` (sequence, head) pairs: the count whose programs finish soonest,
    counted as waves of ``resident`` programs per SM (default ``resident_per_sm()``) times pages
    per program, fewest splits on a tie; at least 4 pages per split. (Rounding 132 SMs / 24 heads
    up to 6 splits measured 1.6x slower at Wan-5B than 22: 144 programs, a second wave of 12.)"""
    slots = torch.cuda.get_device_properties(device).multi_processor_count * (resident or resident_per_sm())
    return splits_for_fewest_rounds(rows, max_pages, slots)


def splits_for_fewest_rounds(rows: int, max_pages: int, slots: int) -> int:
    """``choose_splits``'s rule for ``slots`` programs running at once: the split count (at least 4
    pages per split) that minimises waves x pages per program, the fewest on a tie."""
    candidates = range(1, max(1, max_pages // 4) + 1)
    return min(candidates, key=lambda s: (-(-rows * s // slots)) * -(-max_pages // s))


def paged_decode_ws(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, npages,
                    scale: float | None = None, splits: int | None = None, out: torch.Tensor | None = None,
                    nbuf: int = NBUF, producer_warps: int = PRODUCER_WARPS, producer_regs: int = PRODUCER_REGS,
                    max_regs: int = MAX_REGS, ahead: int = AHEAD) -> torch.Tensor:
    """``attention_wgmma.paged_decode_wgmma``'s contract (q [B, Tq <= 64, H, D], cached K/V only),
    on the warp-specialized kernel. ``nbuf``, ``producer_warps``, ``producer_regs`` and
    ``max_regs`` are tuning knobs (the ring depth, the decode warps, their registers, the launch's
    register cap per thread), ``ahead`` the pages (1-3) whose bytes are in flight beyond the one
    being decoded."""
    if ahead not in (1, 2, 3):
        raise ValueError(f"ahead: expected 1, 2 or 3 pages, got {ahead!r}")
    b, _, h, _ = q.shape
    if splits is None:
        splits = choose_splits(b * h, table.shape[1], q.device, resident_per_sm(producer_warps, max_regs))
    return launch_decode(paged_decode_ws_kernel, q, (k_data, k_scale, k_global, v_data, v_scale, v_global), table,
                         fills, npages, scale, splits, out, NBUF=nbuf, PRODUCER_WARPS=producer_warps,
                         PRODUCER_REGS=producer_regs, AHEAD=ahead, num_warps=CONSUMER_WARPS, maxnreg=max_regs)
