"""Decode attention over a paged NVFP4 KV cache on CUDA cores: one query per program, no MMA.

Why a second kernel next to ``attention.py``: for one query the tensor-core kernel pads it to a
16-row MMA tile (16x the dot-product work), stages every decoded tile through shared memory for
the MMA, and holds ~225 registers per thread, which leaves 8 warps per SM (Nsight Compute, H100,
Tq=1). Here each program decodes its K/V tiles once and does the dot products as fp32 FMAs in
registers: no shared memory, no padded rows, fewer registers, more warps per SM. Measured (H100,
benchmarks/RESULTS.md): 1.55x / 1.63x flash SDPA at Wan-1.3B / Wan-5B against the tensor-core
kernel's 1.42x / 1.43x, so only Tq = 1 takes it. It is still bound by the decode's instructions
(4-5 per element) at 25% occupancy, not by the ~40 MB of pages it reads.

Work per program: one query row of one (sequence, head), over a contiguous run of that
sequence's pages (a split; flash-decoding). The softmax state is kept per token slot of the tile
(reference max shared, sums and P.V accumulators per slot) and reduced across slots once at the
end, so the loop has no cross-thread reduction except the q.k dot along head_dim; the state is
rescaled lazily (only when the max grows by 2^8), not on every tile. Partials go to
``attention.combine_splits``, the same merge the tensor-core kernel uses.

Numerics: K/V decode to exact fp16 (``decode_nvfp4_tile``), q stays fp32 (the tensor-core kernel
rounds it to fp16), scores and P.V in fp32 with the page's FP32 decode scale applied per page.

    q, out          [B, Tq, H, D]   bf16 / fp16 / fp32 (last dim contiguous)
    pages           as attention.py: k/v_data [P, S, H, D/2], k/v_scale [P, S, H, D/16], k/v_global [P, H]
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .attention import (INTERPRET, LOG2E, _num_sms, _page_entry, _page_tile, _split_pages, check_geometry,
                        combine_splits, split_workspace)


#: The lazily rescaled softmax state lets weights grow to 2^RESCALE_LOG2 before it rescales.
RESCALE_LOG2 = tl.constexpr(8.0)


@triton.jit
def paged_decode_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    ws_m_ptr, ws_l_ptr, ws_acc_ptr,
    Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh,
    D: tl.constexpr, S: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
):
    row, pid_bh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    half = tl.arange(0, D // 2)
    q_row = q_ptr + b.to(tl.int64) * s_qb + row.to(tl.int64) * s_qt + h * s_qh
    q_e = tl.load(q_row + 2 * half).to(tl.float32)
    q_o = tl.load(q_row + 2 * half + 1).to(tl.float32)

    m_ref = tl.full([], float("-inf"), tl.float32)        # reference max (log2 domain), shared by all slots
    l_i = tl.zeros((BLOCK_N,), tl.float32)                  # per slot: sum of 2^(s - m_ref)
    acc_e = tl.zeros((BLOCK_N, D // 2), tl.float32)         # per slot: sum of 2^(s - m_ref) x v
    acc_o = tl.zeros((BLOCK_N, D // 2), tl.float32)

    first, last = _split_pages(npages_ptr, b, split, PAGES_PER_SPLIT)
    for i in range(first, last):
        page, fill, k_mult, v_mult = _page_entry(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, h, H, MAX_PAGES, qk_scale)
        for t0 in tl.static_range(0, S, BLOCK_N):
            tok = t0 + tl.arange(0, BLOCK_N)
            tok_ok = tok < fill
            k_e, k_o = _page_tile(kd_ptr, ks_ptr, page, h, tok, tok_ok, H, S, D, BLOCK_N)
            s = tl.sum(k_e.to(tl.float32) * q_e[None, :] + k_o.to(tl.float32) * q_o[None, :], 1)
            s = tl.where(tok_ok, s * k_mult, float("-inf"))
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
            v_e, v_o = _page_tile(vd_ptr, vs_ptr, page, h, tok, tok_ok, H, S, D, BLOCK_N)
            pv = (p * v_mult)[:, None]
            acc_e = acc_e + pv * v_e.to(tl.float32)
            acc_o = acc_o + pv * v_o.to(tl.float32)

    l_sum = tl.sum(l_i, 0)
    out_e = tl.sum(acc_e, 0)
    out_o = tl.sum(acc_o, 0)
    if not SPLIT:
        o_row = out_ptr + b.to(tl.int64) * s_ob + row.to(tl.int64) * s_ot + h * s_oh
        tl.store(o_row + 2 * half, (out_e / l_sum).to(out_ptr.dtype.element_ty))
        tl.store(o_row + 2 * half + 1, (out_o / l_sum).to(out_ptr.dtype.element_ty))
    else:
        # partials [SPLITS, B*H, Tq] (+ D): an empty split leaves max = -inf, sum = 0, acc = 0
        base = (split * tl.num_programs(1) + pid_bh).to(tl.int64) * Tq + row
        tl.store(ws_m_ptr + base, m_ref)
        tl.store(ws_l_ptr + base, l_sum)
        tl.store(ws_acc_ptr + base * D + 2 * half, out_e)
        tl.store(ws_acc_ptr + base * D + 2 * half + 1, out_o)


#: Programs per SM the split count aims for (H100 sweep, benchmarks/RESULTS.md).
PROGRAMS_PER_SM = 4


def default_decode_tile(page_size: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps): token slots per tile and warps per program (H100 sweep)."""
    if INTERPRET:
        return min(page_size, 16), 1
    return min(page_size, 32), 4


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
                           tile: tuple[int, int] | None = None) -> torch.Tensor:
    """Attention of each query row of ``q`` over the pages in ``table``/``fills`` (no fresh K/V),
    one program per (query, sequence, head, split); see the module docstring for layouts.
    ``splits`` forces the page split, ``out`` receives the result, ``tile`` = (BLOCK_N, num_warps)
    overrides ``default_decode_tile`` (tuning)."""
    b, tq, h, d = q.shape
    page_size = k_data.shape[1]
    check_geometry(page_size, d)
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q) if out is None else out
    block_n, warps = default_decode_tile(page_size) if tile is None else _check_decode_tile(tile, page_size)
    max_pages = table.shape[1]
    splits = choose_decode_splits(tq * b * h, max_pages, q.device) if splits is None else splits
    pages_per_split = triton.cdiv(max(max_pages, 1), splits)
    ws_m, ws_l, ws_acc = split_workspace(splits, b * h, tq, d, q.device)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    paged_decode_kernel[(tq, b * h, splits)](
        q, out, k_data, k_scale.view(torch.uint8), k_global, v_data, v_scale.view(torch.uint8), v_global,
        table, fills, npages, ws_m, ws_l, ws_acc,
        tq, h, max_pages, pages_per_split, scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        D=d, S=page_size, BLOCK_N=block_n, SPLIT=splits > 1, num_warps=warps, num_stages=1,
    )
    if splits > 1:
        combine_splits(ws_m, ws_l, ws_acc, out, splits)
    return out
