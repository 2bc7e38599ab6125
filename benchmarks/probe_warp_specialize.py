"""Probe: does Triton's Hopper warp specialization make the full-chunk GEMM faster?

Triton 3.6 partitions a persistent loop marked ``warp_specialize=True`` on sm_90 into a TMA
producer warp group and two consumer warp groups (each one half of the 128-row tile), like
CUTLASS's warp-specialized Hopper GEMMs. On the CPU machine (compiled for sm_90) it does so only
with 4 warps given, with descriptors made inside the kernel, and with an epilogue it can split by
rows: a whole-tile reduction or an atomic (the amax our epilogue takes) aborts the pass
("Unexpected asyncTaskIds.size()"). So the probe's kernel keeps the committed kernel's main loop
and ends in alpha, bias and a store, optionally with per-row maxima written to a workspace (what
an amax would then need). Both are timed beside the committed persistent TMA kernel (same
epilogue switches: alpha, bias, no activation, no amax) and cuBLAS fp16, on the same decoded
operands of every Wan full-chunk GEMM; GPU time from CUDA-graph replays. Each variant's output
is compared with the committed kernel's (NaN = elements left unwritten).

    python benchmarks/probe_warp_specialize.py [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(__file__))
from common import WORKLOADS, bench_graph_ms, block_gemms, finish, gemm_case, print_table  # noqa: E402

from nvfp4_compiler.backends.triton.gemm import OPERAND_UNSCALE, _tile_coords  # noqa: E402

#: (BLOCK_M, BLOCK_N, BLOCK_K, stages) of the warp-specialized variants (4 warps each given).
TILES = [(128, 256, 64, 3), (128, 256, 64, 4), (128, 128, 64, 4), (128, 128, 64, 5), (128, 256, 32, 6)]


@triton.jit
def ws_gemm_kernel(a_ptr, w_ptr, a_gs_ptr, w_gs_ptr, bias_ptr, out_ptr, row_max_ptr, M, N, KP,
                   ROW_MAX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr = 8):
    a_desc = tl.make_tensor_descriptor(a_ptr, [M, KP], [KP, 1], [BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, [N, KP], [KP, 1], [BLOCK_N, BLOCK_K])
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=False, warp_specialize=True):
        pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, KP, BLOCK_K):
            acc = tl.dot(a_desc.load([pid_m * BLOCK_M, k0]), w_desc.load([pid_n * BLOCK_N, k0]).T, acc)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        y = (acc * OPERAND_UNSCALE) * (tl.load(a_gs_ptr) * tl.load(w_gs_ptr))
        y = y + tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
        if ROW_MAX:  # per-row maxima of the tile, one workspace row per column tile
            row_max = tl.max(tl.where(mask, tl.abs(y), 0.0), axis=1)
            tl.store(row_max_ptr + pid_n * M + offs_m, row_max, mask=offs_m < M)


def _case(m: int, k: int, n: int, kind: str) -> dict:
    from nvfp4_compiler.backends.triton import dense_gemm as d
    from nvfp4_compiler.backends.triton import gemm as g

    c = gemm_case(m, k, n, kind)
    a16, w16 = d.decode_to_f16(c.xq.data.reshape(m, k // 2), c.xq.scale.reshape(m, k // 16),
                               w_data=c.wq.data, w_scale=c.wq.scale)
    a_gs, w_gs = c.xq.global_scale.reshape(1), c.wq.global_scale.reshape(1)
    bias = c.bias if c.bias is not None else torch.zeros(n, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    row_max = torch.zeros(triton.cdiv(n, 128), m, device="cuda")
    none_v, none_s = g._as_btn(None, torch.Size([m, n]), "cuda")
    flags = dict(ACT=0, HAS_BIAS=True, HAS_GATE=False, HAS_RES=False, WANT_AMAX=False, QUANT_OUT=False)

    def committed(_):
        d.dense_tma_gemm(a16, w16, a_gs, w_gs, bias, none_v, none_s, none_v, none_s, m, out, row_max, (a_gs,) * 4, flags)

    committed(0)
    want = out.float().clone()
    us = {"cublas_fp16": bench_graph_ms(lambda _: torch.matmul(a16, w16.T)) * 1e3,
          "committed": bench_graph_ms(committed) * 1e3}
    errors = {}
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for bm, bn, bk, stages in TILES:
        for row_max_on in (False, True):
            name = f"ws {bm}x{bn}x{bk} s{stages}" + (" +row max" if row_max_on else "")

            def ws(_):
                programs = min(triton.cdiv(m, bm) * triton.cdiv(n, bn), sms)
                ws_gemm_kernel[(programs,)](a16, w16, a_gs, w_gs, bias, out, row_max, m, n, k, ROW_MAX=row_max_on,
                                            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=4, num_stages=stages)
            try:
                out.fill_(float("nan"))
                ws(0)
                errors[name] = float((out.float() - want).norm() / want.norm())
                us[name] = bench_graph_ms(ws) * 1e3
            except Exception as exc:  # a configuration the compiler rejects is reported, not fatal
                errors[name], us[name] = repr(exc)[:160], float("nan")
    return {"m": m, "k": k, "n": n, "us": us, "rel_err_vs_committed": errors}


def run(json_path: str | None = None) -> dict:
    # in-kernel descriptors live in a global scratch that Triton asks the caller for
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    results, rows = [], []
    for model in WORKLOADS:
        m = WORKLOADS[model][2]
        for name, k, n, kind in block_gemms(model):
            r = _case(m, k, n, kind) | {"model": model, "gemm": name}
            results.append(r)
            ws = {v: t for v, t in r["us"].items() if v.startswith("ws") and t == t and r["rel_err_vs_committed"][v] < 1e-3}
            best = min(ws, key=ws.get) if ws else "-"
            rows.append([model, name, f"{m}x{k}x{n}", r["us"]["cublas_fp16"], r["us"]["committed"], best,
                         ws.get(best, float("nan")), r["us"]["committed"] / ws.get(best, float("nan"))])
            torch.cuda.empty_cache()
    print_table("Warp-specialized vs committed persistent TMA kernel, decoded fp16 operands, GPU us",
                ["model", "gemm", "M x K x N", "cuBLAS fp16", "committed", "best correct ws", "us", "committed / ws"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    run(parser.parse_args().json)
