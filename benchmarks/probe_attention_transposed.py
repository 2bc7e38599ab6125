"""Probe: decode-sized attention over NVFP4 pages with the decoded K/V tiles as the *A* operand.

Question. The tensor-core kernel (``attention.py``) computes S = Q K^T and O = P V: the decoded K
and V tiles are the MMA's B operand, which Hopper's wgmma (and Triton) can only read from shared
memory, so every decoded tile (16 KB of fp16 per page and operand) is stored to shared memory,
fenced and waited on before its MMA. Transposed, S^T = K Q^T and O^T = V^T P^T: the decoded tiles
become the A operand, which wgmma reads from registers (Triton 3.6 keeps them there: TTGIR
``dot_op<{opIdx = 0, parent = #mma}>``), Q^T sits in shared memory once per program, and only
P^T (2 KB at 16 queries) goes through shared memory per page. The queries become the MMA's N
dimension, which may be 16 (no padding to 64 rows for Tq <= 16 on wgmma).

Compiled for sm_90 on the CPU machine (Triton 3.6, cuobjdump): at 16 queries, 4 warps, the loop
body is 1811 SASS instructions per warp (7244 per page and head) against the current 16-query
tile's 3377 per warp at 2 warps (6754, plus register spills); 239 registers, no spills, 8 KB of
shared memory against 255 registers + 232 B of stack. So not fewer instructions; what changes is
the shared-memory round trips and barriers per page (16 vs 22 BAR).

Answer (H100, nineteenth session, ``runs/probe_transposed_h100_s19.json``): no. Best tiles against
the committed kernel in the same run: Tq = 16 0.96x / 0.89x (Wan-1.3B / Wan-5B), Tq = 64 1.09x /
0.94x, Tq = 1 0.86x / 0.79x (and slower than the one-query CUDA-core kernel). The staging of
decoded tiles through shared memory is not what binds these kernels; the decode's instruction
stream (about the same per page either way) is. Not kept in the package.

    TRITON_INTERPRET=1 python benchmarks/probe_attention_transposed.py --check     # CPU: vs reference
    python benchmarks/probe_attention_transposed.py --json out.json               # H100: timings
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(__file__))
from nvfp4_compiler.backends.triton.attention import (LOG2E, _page_entry, _page_tile, _split_pages,  # noqa: E402
                                                      check_geometry, choose_splits, combine_splits,
                                                      split_workspace)


@triton.jit
def transposed_attention_kernel(
    q_ptr, out_ptr, kd_ptr, ks_ptr, kg_ptr, vd_ptr, vs_ptr, vg_ptr, table_ptr, fills_ptr, npages_ptr,
    ws_m_ptr, ws_l_ptr, ws_acc_ptr,
    Tq, H, MAX_PAGES, PAGES_PER_SPLIT, qk_scale,
    s_qb, s_qt, s_qh, s_ob, s_ot, s_oh,
    D: tl.constexpr, S: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
):
    pid_m, pid_bh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    half = tl.arange(0, D // 2)
    m_ok = offs_m[None, :] < Tq
    q_col = q_ptr + b.to(tl.int64) * s_qb + offs_m[None, :].to(tl.int64) * s_qt + h * s_qh
    qt_e = tl.load(q_col + 2 * half[:, None], mask=m_ok, other=0.0).to(tl.float16)       # [D/2, BLOCK_M]
    qt_o = tl.load(q_col + 2 * half[:, None] + 1, mask=m_ok, other=0.0).to(tl.float16)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc_e = tl.zeros((D // 2, BLOCK_M), tl.float32)                                       # O^T halves
    acc_o = tl.zeros((D // 2, BLOCK_M), tl.float32)

    first, last = _split_pages(npages_ptr, b, split, PAGES_PER_SPLIT)
    for i in range(first, last):
        page, fill, k_mult, v_mult = _page_entry(table_ptr, fills_ptr, kg_ptr, vg_ptr, b, i, h, H, MAX_PAGES, qk_scale)
        for t0 in tl.static_range(0, S, BLOCK_N):
            tok = t0 + tl.arange(0, BLOCK_N)
            tok_ok = tok < fill
            k_e, k_o = _page_tile(kd_ptr, ks_ptr, page, h, tok, tok_ok, H, S, D, BLOCK_N)
            st = tl.dot(k_e, qt_e) + tl.dot(k_o, qt_o)                                   # [BLOCK_N, BLOCK_M]
            st = tl.where(tok_ok[:, None], st * k_mult, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(st, 0))
            alpha = tl.exp2(m_i - m_new)
            pt = tl.exp2(st - m_new[None, :])
            l_i = l_i * alpha + tl.sum(pt, 0)
            pt16 = pt.to(tl.float16)
            v_e, v_o = _page_tile(vd_ptr, vs_ptr, page, h, tok, tok_ok, H, S, D, BLOCK_N)
            acc_e = acc_e * alpha[None, :] + tl.dot(tl.trans(v_e), pt16) * v_mult
            acc_o = acc_o * alpha[None, :] + tl.dot(tl.trans(v_o), pt16) * v_mult
            m_i = m_new

    if not SPLIT:
        o_col = out_ptr + b.to(tl.int64) * s_ob + offs_m[None, :].to(tl.int64) * s_ot + h * s_oh
        tl.store(o_col + 2 * half[:, None], (acc_e / l_i[None, :]).to(out_ptr.dtype.element_ty), mask=m_ok)
        tl.store(o_col + 2 * half[:, None] + 1, (acc_o / l_i[None, :]).to(out_ptr.dtype.element_ty), mask=m_ok)
    else:
        base = (split * tl.num_programs(1) + pid_bh).to(tl.int64) * Tq + offs_m
        tl.store(ws_m_ptr + base, m_i, mask=offs_m < Tq)
        tl.store(ws_l_ptr + base, l_i, mask=offs_m < Tq)
        acc_col = ws_acc_ptr + base[None, :] * D
        tl.store(acc_col + 2 * half[:, None], acc_e, mask=m_ok)
        tl.store(acc_col + 2 * half[:, None] + 1, acc_o, mask=m_ok)


def transposed_attention(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, npages,
                         tile=(16, 64, 4, 1), splits=None):
    """Decode attention (no fresh K/V) with the transposed kernel; same arguments as
    ``attention.paged_attention``."""
    b, tq, h, d = q.shape
    page_size = k_data.shape[1]
    check_geometry(page_size, d)
    block_m, block_n, warps, stages = tile
    out = torch.empty_like(q)
    max_pages = table.shape[1]
    m_tiles = triton.cdiv(tq, block_m)
    if splits is None:
        splits = choose_splits(m_tiles * b * h, max_pages, q.device, min(tq, block_m), page_size)
    ws_m, ws_l, ws_acc = split_workspace(splits, b * h, tq, d, q.device)
    transposed_attention_kernel[(m_tiles, b * h, splits)](
        q, out, k_data, k_scale.view(torch.uint8), k_global, v_data, v_scale.view(torch.uint8), v_global,
        table, fills, npages, ws_m, ws_l, ws_acc,
        tq, h, max_pages, triton.cdiv(max(max_pages, 1), splits), LOG2E / math.sqrt(d),
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        D=d, S=page_size, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT=splits > 1, num_warps=warps, num_stages=stages)
    if splits > 1:
        combine_splits(ws_m, ws_l, ws_acc, out, splits)
    return out


def check() -> None:
    """CPU (interpreter): the transposed kernel against the fp32 reference, as the kernel tests do."""
    import torch.nn.functional as F
    from nvfp4_compiler.kv_cache import PagedNVFP4Cache

    gen = torch.Generator().manual_seed(0)
    for page, heads, dim, chunks, tq, splits in [(16, 2, 32, (20, 7, 33), 5, None), (16, 2, 32, (16, 40), 17, 3),
                                                 (32, 1, 64, (3, 50, 50), 16, 1)]:
        cache = PagedNVFP4Cache(2 * sum(-(-t // page) for t in chunks), page, heads, dim)
        for seq in range(2):
            cache.add_sequence(seq)
            for i, n in enumerate(chunks):
                cache.append(seq, *(torch.randn(n, heads, dim, generator=gen) * 3 for _ in range(2)), sink=i == 0)
        q = torch.randn(2, tq, heads, dim, generator=gen).half()
        table, fills, npages = cache.page_tables([0, 1])
        out = transposed_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                                   cache.v_global, table, fills, npages, tile=(16, 16, 4, 1), splits=splits)
        want = []
        for row in range(2):
            k, v = cache.gather(row)
            o = F.scaled_dot_product_attention(q[row].float().transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
            want.append(o.transpose(0, 1))
        err = float((out.float() - torch.stack(want)).abs().max())
        print(f"page {page} heads {heads} dim {dim} Tq {tq} splits {splits}: max abs err {err:.2e}")
        torch.testing.assert_close(out.float(), torch.stack(want), atol=3e-3, rtol=1e-2)


TILES = {1: [(16, 64, 4, 1), (16, 64, 4, 2)],
         16: [(16, 64, 4, 1), (16, 64, 4, 2), (16, 64, 8, 1)],
         64: [(64, 64, 4, 1), (64, 64, 8, 1), (64, 64, 8, 2), (32, 64, 4, 1), (16, 64, 4, 1)]}


def bench(json_path: str | None, models) -> None:
    from bench_attention import Workload, _rel_err
    from common import bench_graph_ms, finish

    from nvfp4_compiler.backends.triton.attention import paged_attention as current

    rows = []
    for model in models:
        w = Workload(model)
        pages = (*w.page_args, w.npages)
        for tq in (1, 16, 64):
            q, _ = w.inputs(tq, False)
            fns = w.routes(q, None)
            ref = fns["sdpa_bf16"](0).float()
            sdpa_ms = bench_graph_ms(fns["sdpa_bf16"], replays=5)
            base_ms = bench_graph_ms(lambda i: current(q, *pages), replays=5)
            vector_ms = bench_graph_ms(fns["vector"], replays=5) if tq == 1 else None  # the one-query kernel
            row = {"model": model, "tq": tq, "sdpa_ms": sdpa_ms, "tensor_core_ms": base_ms, "vector_ms": vector_ms,
                   "transposed": []}
            print(f"{model} Tq={tq}: SDPA {sdpa_ms * 1e3:.1f} us, current tensor-core {base_ms * 1e3:.1f} us "
                  f"({sdpa_ms / base_ms:.2f}x)" + (f", vector {vector_ms * 1e3:.1f} us" if vector_ms else ""),
                  flush=True)
            for tile in TILES[tq]:
                for splits in (None, 22, 44):
                    fn = (lambda i, t=tile, s=splits: transposed_attention(q, *pages, tile=t, splits=s))
                    try:
                        err = _rel_err(fn(0), ref)
                        ms = bench_graph_ms(fn, replays=5)
                    except Exception as e:  # a tile that does not compile is a result too
                        print(f"  {tile} splits={splits}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                        continue
                    row["transposed"].append({"tile": tile, "splits": splits, "ms": ms, "rel_err": err})
                    print(f"  transposed {tile} splits={splits}: {ms * 1e3:.1f} us, {sdpa_ms / ms:.2f}x SDPA, "
                          f"{base_ms / ms:.2f}x current, rel err {err:.1e}", flush=True)
            rows.append(row)
    finish(json_path, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="CPU interpreter check against the reference")
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", nargs="+", default=["wan-1.3b", "wan-5b"])
    args = parser.parse_args()
    check() if args.check else bench(args.json, args.models)
