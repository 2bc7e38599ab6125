"""Triton attention over a paged NVFP4 KV cache (the twin of ``nvfp4_compiler.paged_attention``).

One program owns BLOCK_M queries of one (sequence, head) and walks that sequence's pages through
the block table: each K/V tile is loaded as packed E2M1 + E4M3 bytes and decoded in registers to
exact fp16 (E2M1 x E4M3 needs at most 6 significant bits), the page's FP32 decode scale is applied
to the fp32 scores and to the fp32 P.V product, and an online softmax (exp2, fp32) folds the tiles.
No bf16 copy of the cache is made. The chunk's own fresh K/V (not cached yet) come last.

Head dimension order: both q.k and p.V run on the even and the odd elements of head_dim separately
(element 2i is byte i's low nibble, 2i+1 its high one), so no nibble interleave is needed; the
output's even and odd columns are stored separately.

Few queries (decode) cannot fill the GPU with one program per (sequence, head): the pages are then
split over several programs (flash-decoding), each writing an unnormalized partial (max, sum, acc)
that ``combine_splits_kernel`` merges.

    q, out          [B, Tq, H, D]   bf16 / fp16 / fp32 (last dim contiguous)
    k/v_data        [P, S, H, D/2]  uint8;  k/v_scale [P, S, H, D/16] E4M3 bits;  k/v_global [P, H] fp32
    table, fills    [B, max_pages]  int32   physical page and tokens stored on it (0 past the end)
    k_new, v_new    [B, Tn, H, D]   or none
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .numerics import DECODED_TILE_UNSCALE, decode_nvfp4_tile

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LOG2E = 1.4426950408889634


@triton.jit
def _page_tile(data_ptr, scale_ptr, page, head, tok, tok_ok, H, S, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Even and odd head_dim elements of tokens ``tok`` of ``page`` (one head), fp16 [BLOCK_N, D/2]
    each, worth 2^-7 x (E2M1 x E4M3) (``decode_nvfp4_tile``), without the page's FP32 scale (zeros
    past the fill)."""
    row = (page * S + tok) * H + head                                   # int64 [BLOCK_N]
    packed = tl.load(data_ptr + row[:, None] * (D // 2) + tl.arange(0, D // 2)[None, :],
                     mask=tok_ok[:, None], other=0)
    bits = tl.load(scale_ptr + row[:, None] * (D // 16) + tl.arange(0, D // 16)[None, :],
                   mask=tok_ok[:, None], other=0).to(tl.int32)
    return decode_nvfp4_tile(packed, bits)


@triton.jit
def _split_pages(npages_ptr, b, split, PAGES_PER_SPLIT):
    """[first, last) logical pages of row ``b`` that page split ``split`` walks (may be empty)."""
    first = split * PAGES_PER_SPLIT
    return first, tl.minimum(first + PAGES_PER_SPLIT, tl.load(npages_ptr + b))


@triton.jit
def _page_entry(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, h, H, MAX_PAGES, qk_scale):
    """Logical page ``i`` of row ``b``: its physical page, tokens stored on it, and the multipliers
    that turn decoded K tiles into log2-domain scores and decoded V tiles into values (the page's
    FP32 decode scale for head ``h``, undoing ``decode_nvfp4_tile``'s 2^-7)."""
    page = tl.load(table_ptr + b * MAX_PAGES + i).to(tl.int64)
    fill = tl.load(fills_ptr + b * MAX_PAGES + i)
    k_mult = tl.load(kg_ptr + page * H + h) * (qk_scale * DECODED_TILE_UNSCALE)
    v_mult = tl.load(vg_ptr + page * H + h) * DECODED_TILE_UNSCALE
    return page, fill, k_mult, v_mult


@triton.jit
def _fold(m_i, l_i, acc_e, acc_o, s, v_e, v_o, v_mult):
    """Online softmax: fold scores ``s`` (log2 domain, masked = -inf) and values into the state."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    p16 = p.to(tl.float16)
    acc_e = acc_e * alpha[:, None] + tl.dot(p16, v_e) * v_mult
    acc_o = acc_o * alpha[:, None] + tl.dot(p16, v_o) * v_mult
    return m_new, l_i, acc_e, acc_o


@triton.jit
def paged_attention_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    kn_ptr, vn_ptr, ws_m_ptr, ws_l_ptr, ws_acc_ptr,
    Tq, Tn, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh, s_nb, s_nt, s_nh,
    D: tl.constexpr, S: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_NEW: tl.constexpr, SPLIT: tl.constexpr,
):
    pid_m, pid_bh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    half = tl.arange(0, D // 2)
    m_ok = offs_m[:, None] < Tq
    q_row = q_ptr + b.to(tl.int64) * s_qb + offs_m[:, None].to(tl.int64) * s_qt + h * s_qh
    q_e = tl.load(q_row + 2 * half[None, :], mask=m_ok, other=0.0).to(tl.float16)
    q_o = tl.load(q_row + 2 * half[None, :] + 1, mask=m_ok, other=0.0).to(tl.float16)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc_e = tl.zeros((BLOCK_M, D // 2), tl.float32)
    acc_o = tl.zeros((BLOCK_M, D // 2), tl.float32)

    first, last = _split_pages(npages_ptr, b, split, PAGES_PER_SPLIT)
    for i in range(first, last):
        page, fill, k_mult, v_mult = _page_entry(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, h, H, MAX_PAGES, qk_scale)
        # a static inner loop (unrolled) keeps the page loop a single loop the compiler pipelines
        for t0 in tl.static_range(0, S, BLOCK_N):
            tok = t0 + tl.arange(0, BLOCK_N)
            tok_ok = tok < fill
            k_e, k_o = _page_tile(kd_ptr, ks_ptr, page, h, tok, tok_ok, H, S, D, BLOCK_N)
            s = tl.dot(q_e, tl.trans(k_e)) + tl.dot(q_o, tl.trans(k_o))
            s = tl.where(tok_ok[None, :], s * k_mult, float("-inf"))
            v_e, v_o = _page_tile(vd_ptr, vs_ptr, page, h, tok, tok_ok, H, S, D, BLOCK_N)
            m_i, l_i, acc_e, acc_o = _fold(m_i, l_i, acc_e, acc_o, s, v_e, v_o, v_mult)

    if HAS_NEW:
        if split == tl.num_programs(2) - 1:  # the chunk's own K/V: once, in the last split
            for t0 in range(0, Tn, BLOCK_N):
                tok = t0 + tl.arange(0, BLOCK_N)
                tok_ok = tok < Tn
                n_row = b.to(tl.int64) * s_nb + tok[:, None].to(tl.int64) * s_nt + h * s_nh
                k_e = tl.load(kn_ptr + n_row + 2 * half[None, :], mask=tok_ok[:, None], other=0.0).to(tl.float16)
                k_o = tl.load(kn_ptr + n_row + 2 * half[None, :] + 1, mask=tok_ok[:, None], other=0.0).to(tl.float16)
                s = tl.dot(q_e, tl.trans(k_e)) + tl.dot(q_o, tl.trans(k_o))
                s = tl.where(tok_ok[None, :], s * qk_scale, float("-inf"))
                v_e = tl.load(vn_ptr + n_row + 2 * half[None, :], mask=tok_ok[:, None], other=0.0).to(tl.float16)
                v_o = tl.load(vn_ptr + n_row + 2 * half[None, :] + 1, mask=tok_ok[:, None], other=0.0).to(tl.float16)
                m_i, l_i, acc_e, acc_o = _fold(m_i, l_i, acc_e, acc_o, s, v_e, v_o, 1.0)

    if not SPLIT:
        o_row = out_ptr + b.to(tl.int64) * s_ob + offs_m[:, None].to(tl.int64) * s_ot + h * s_oh
        l_i = softmax_denominator(l_i)
        _store_halves(o_row, half, acc_e / l_i[:, None], acc_o / l_i[:, None], m_ok)
    else:
        # partials [SPLITS, B*H, Tq] (+ D): an empty split leaves max = -inf, sum = 0, acc = 0
        base = (split * tl.num_programs(1) + pid_bh).to(tl.int64) * Tq + offs_m
        tl.store(ws_m_ptr + base, m_i, mask=offs_m < Tq)
        tl.store(ws_l_ptr + base, l_i, mask=offs_m < Tq)
        acc_row = ws_acc_ptr + base[:, None] * D
        tl.store(acc_row + 2 * half[None, :], acc_e, mask=m_ok)
        tl.store(acc_row + 2 * half[None, :] + 1, acc_o, mask=m_ok)


@triton.jit
def _store_halves(row_ptr, half, even, odd, mask):
    tl.store(row_ptr + 2 * half[None, :], even.to(row_ptr.dtype.element_ty), mask=mask)
    tl.store(row_ptr + 2 * half[None, :] + 1, odd.to(row_ptr.dtype.element_ty), mask=mask)


@triton.jit
def combine_row(ws_m_ptr, ws_l_ptr, ws_acc_ptr, out_row_ptr, row, pid_bh, Tq, BH, SPLITS,
                D: tl.constexpr, SPLIT_BLOCK: tl.constexpr):
    """out = sum_s 2^(m_s - m) acc_s / sum_s 2^(m_s - m) l_s, m = max_s m_s (empty splits weigh 0),
    for query ``row`` of (sequence, head) ``pid_bh``, written to ``out_row_ptr`` [D]. One pass with
    a running max, SPLIT_BLOCK partials per step. Loads go to L2 (``.cg``): when the last split
    program of a kernel combines, the partials were written by other SMs."""
    d = tl.arange(0, D)
    m_run = tl.full([], float("-inf"), tl.float32)
    l_run = tl.zeros([], tl.float32)
    acc = tl.zeros((D,), tl.float32)
    for s0 in range(0, SPLITS, SPLIT_BLOCK):
        s = s0 + tl.arange(0, SPLIT_BLOCK)
        ok = s < SPLITS
        base = (s * BH + pid_bh).to(tl.int64) * Tq + row
        m = tl.load(ws_m_ptr + base, mask=ok, other=float("-inf"), cache_modifier=".cg")
        l = tl.load(ws_l_ptr + base, mask=ok, other=0.0, cache_modifier=".cg")
        part = tl.load(ws_acc_ptr + base[:, None] * D + d[None, :], mask=ok[:, None], other=0.0,
                       cache_modifier=".cg")
        m_new = tl.maximum(m_run, tl.max(m, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all empty so far: weights 0, not NaN
        alpha = tl.exp2(m_run - m_safe)
        w = tl.exp2(m - m_safe)
        l_run = l_run * alpha + tl.sum(w * l, 0)
        acc = acc * alpha + tl.sum(w[:, None] * part, 0)
        m_run = m_new
    tl.store(out_row_ptr + d, (acc / softmax_denominator(l_run)).to(out_row_ptr.dtype.element_ty))


@triton.jit
def softmax_denominator(l):
    """The softmax sum to divide by: 1 where it is 0, i.e. where no key was read (a sequence with
    no cached tokens and no fresh K/V), whose accumulator is 0. The output is then 0, as SDPA gives
    over no keys, instead of 0/0 = NaN."""
    return tl.where(l == 0.0, 1.0, l)


@triton.jit
def combine_splits_kernel(ws_m_ptr, ws_l_ptr, ws_acc_ptr, out_ptr, Tq, H, BH, SPLITS,
                          s_ob, s_ot, s_oh, D: tl.constexpr, SPLIT_BLOCK: tl.constexpr):
    """``combine_row`` for every query of every (sequence, head): one program each. The combine is
    a chain of dependent loads run by few programs, so its time is the number of steps (H100: 7-11
    us with a max pass then a sum pass, 4.3 us in one pass)."""
    row, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    o = out_ptr + b.to(tl.int64) * s_ob + row.to(tl.int64) * s_ot + h * s_oh
    combine_row(ws_m_ptr, ws_l_ptr, ws_acc_ptr, o, row, pid_bh, Tq, BH, SPLITS, D, SPLIT_BLOCK)


def split_workspace(splits: int, rows: int, tq: int, d: int, device):
    """fp32 partials (max, sum, acc) of ``splits`` page splits for ``rows`` (sequence, head) pairs
    of ``tq`` queries; one-element placeholders when nothing is split."""
    if splits <= 1:
        ws = torch.empty(1, device=device)
        return ws, ws, ws
    ws_m = torch.empty(splits, rows, tq, device=device)
    return ws_m, torch.empty_like(ws_m), torch.empty(splits, rows, tq, d, device=device)


def combine_block(splits: int) -> int:
    """Partials ``combine_row`` reads per step."""
    return min(64, triton.next_power_of_2(splits))


def combine_splits(ws_m, ws_l, ws_acc, out, splits: int):
    """Launch ``combine_splits_kernel`` over partials [splits, B*H, Tq] (+ D) into ``out``."""
    b, tq, h, d = out.shape
    combine_splits_kernel[(tq, b * h)](
        ws_m, ws_l, ws_acc, out, tq, h, b * h, splits, out.stride(0), out.stride(1), out.stride(2),
        D=d, SPLIT_BLOCK=combine_block(splits), num_warps=4)


def _num_sms(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


def choose_splits(programs: int, max_pages: int, device, tq: int = 1, page_size: int = 64) -> int:
    """Split the pages when (query tiles x sequences x heads) leaves SMs idle: aim for 4 programs
    per SM (memory latency wants many loads in flight), at least 4 pages per split, and keep the
    fp32 partials each split writes and the combine reads (2 x 4 x Tq x D per query tile and head)
    under a quarter of the page bytes read (D/2 + D/16 per token, K and V): at Tq=64 the partials
    of 44 splits cost more than they hid (H100 sweep: 44 splits 0.18 ms, 16 splits 0.11 ms).
    Then round up, to at most twice that, so the programs fill whole waves of SMs: every split does
    the same work, so a part-filled last wave idles SMs. H100, Tq = 64, two sessions' sweeps:
    Wan-1.3B (12 heads) 12 splits 0.112 ms, 22 (264 programs, 2 per SM) 0.100 ms, 33 0.131 ms;
    Wan-5B (24 heads) 19 splits 0.239 ms, 22 (528 programs) 0.232 ms."""
    sms = _num_sms(device)
    if programs >= sms or max_pages < 8:
        return 1
    partial_over_pages = (2 * 4 * tq) / (2 * page_size * (0.5 + 1 / 16))  # per split, D cancels
    by_traffic = max(1, int(max_pages / (4 * partial_over_pages)))
    splits = int(max(1, min(4 * sms // programs, max_pages // 4, by_traffic)))
    waves = -(-programs * splits // sms)
    return max(splits, min(waves * sms // programs, max_pages // 4, 2 * splits))


def default_tile(tq: int, page_size: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages), from the H100 sweep (bench_attention --sweep,
    runs/attention_sweep_h100.json): few queries take the smallest MMA tile; a chunk takes 256
    queries per program, which halves the K/V decode per query against 128 (0.34x -> 0.51x SDPA)."""
    block_n = min(page_size, 16 if INTERPRET else 64)  # divides the page (both powers of two)
    if INTERPRET:
        return 16, block_n, 4, 1
    if tq <= 16:
        return 16, block_n, 2, 2
    if tq <= 64:
        return 64, block_n, 4, 3
    return 256, block_n, 8, 2


def _check_tile(tile, page_size: int) -> tuple[int, int, int, int]:
    block_m, block_n, warps, stages = tile
    if not all(isinstance(v, int) and v > 0 and not v & (v - 1) for v in (block_m, block_n, warps)) \
            or block_m < 16 or block_n < 16 or page_size % block_n or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"tile: expected (BLOCK_M, BLOCK_N, num_warps, num_stages): BLOCK_M, BLOCK_N >= 16 and "
                         f"num_warps powers of two, BLOCK_N dividing the page size {page_size}, num_stages >= 1; "
                         f"got {tile!r}")
    return block_m, block_n, warps, stages


def check_geometry(page_size: int, head_dim: int) -> None:
    """Raise unless the kernels take this cache geometry (``supports``)."""
    if not supports(page_size, head_dim):
        raise ValueError(f"page_size, head_dim: the Triton kernels need powers of two >= 16 and >= 32, "
                         f"got {page_size} and {head_dim}")


def supports(page_size: int, head_dim: int) -> bool:
    """Whether the kernel takes this cache geometry (tile shapes must be powers of two)."""
    return page_size >= 16 and not page_size & (page_size - 1) and head_dim >= 32 and not head_dim & (head_dim - 1)


def paged_attention(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, npages,
                    k_new=None, v_new=None, scale: float | None = None, splits: int | None = None,
                    out: torch.Tensor | None = None, tile: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Attention of ``q`` over the pages in ``table``/``fills`` (+ ``k_new``/``v_new``); see the
    module docstring for layouts. ``splits`` forces the page split; ``out`` receives the result;
    ``tile`` = (BLOCK_M, BLOCK_N, num_warps, num_stages) overrides ``default_tile`` (tuning)."""
    b, tq, h, d = q.shape
    page_size = k_data.shape[1]
    check_geometry(page_size, d)
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q) if out is None else out
    has_new = k_new is not None
    if has_new and (k_new.stride() != v_new.stride() or k_new.stride(-1) != 1):
        # the kernel reads both with one set of strides
        k_new, v_new = k_new.contiguous(), v_new.contiguous()
    kn, vn = (k_new, v_new) if has_new else (q, q)
    block_m, block_n, warps, stages = default_tile(tq, page_size) if tile is None else _check_tile(tile, page_size)
    max_pages = table.shape[1]
    m_tiles = triton.cdiv(tq, block_m)
    splits = choose_splits(m_tiles * b * h, max_pages, q.device, min(tq, block_m), page_size) \
        if splits is None else splits
    pages_per_split = triton.cdiv(max(max_pages, 1), splits)
    ws_m, ws_l, ws_acc = split_workspace(splits, b * h, tq, d, q.device)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    paged_attention_kernel[(m_tiles, b * h, splits)](
        q, out, k_data, k_scale.view(torch.uint8), k_global, v_data, v_scale.view(torch.uint8), v_global,
        table, fills, npages, kn, vn, ws_m, ws_l, ws_acc,
        tq, k_new.shape[1] if has_new else 0, h, max_pages, pages_per_split, scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        kn.stride(0), kn.stride(1), kn.stride(2),
        D=d, S=page_size, BLOCK_M=block_m, BLOCK_N=block_n, HAS_NEW=has_new, SPLIT=splits > 1,
        num_warps=warps, num_stages=stages,
    )
    if splits > 1:
        combine_splits(ws_m, ws_l, ws_acc, out, splits)
    return out
