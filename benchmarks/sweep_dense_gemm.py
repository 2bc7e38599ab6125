"""Sweep: the full-chunk (decoded-operand) GEMM path, piece by piece, on every GEMM of a Wan-1.3B
and a Wan-5B block, all as GPU time from CUDA-graph replays in one run:

- cuBLAS bf16 alone, and with the PyTorch epilogue (the target's baseline);
- cuBLAS fp16 on the decoded operands (what a perfect decoded-operand GEMM could reach);
- the two decode passes alone, the pointer-load kernel alone (GPUs without TMA; the Hopper path
  before the ninth session), the whole NVFP4 call (decodes + TMA kernel);
- the activation decode at each DECODE_TILES tile (bytes checked against the default's);
- the TMA kernel at each tile, non-persistent (one program per output tile) and persistent (one
  program per SM, the committed way), with its error against the pointer-load kernel's output.

    python benchmarks/sweep_dense_gemm.py [--json out.json] [--models wan-1.3b ...]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_gemm import _epilogue  # noqa: E402
from common import WORKLOADS, bench_graph_ms, block_gemms, finish, gemm_case, print_table  # noqa: E402

#: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
TILES = [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 64, 8, 4),
         (128, 128, 64, 4, 4), (64, 256, 64, 4, 4)]
#: (rows, K elements, warps) of a decode program
DECODE_TILES = [(32, 128, 4), (64, 128, 4), (32, 256, 4), (64, 256, 8), (16, 512, 4), (128, 128, 8), (8, 1024, 4)]
PERSISTENCE = {"tiles": 1 << 30, "1/SM": 1}  # programs per SM; "tiles" = one program per output tile


def _case(m: int, k: int, n: int, kind: str) -> dict:
    from nvfp4_compiler.backends.triton import dense_gemm as d
    from nvfp4_compiler.backends.triton import gemm as g

    dev, bf16 = "cuda", torch.bfloat16
    c = gemm_case(m, k, n, kind, dev)
    x, w, xq, wq, bias, gate, res, act = c.x, c.w, c.xq, c.wq, c.bias, c.gate, c.res, c.act
    a2 = xq.data.reshape(m, k // 2)
    a_scale = xq.scale.reshape(m, k // 16)
    a16, w16 = d.decode_to_f16(a2, a_scale), d.decode_to_f16(wq.data, wq.scale)
    gate_v, gs = g._as_btn(gate, torch.Size([m, n]), dev)
    res_v, rs = g._as_btn(res, torch.Size([m, n]), dev)
    flags = dict(ACT=g.ACTIVATION_IDS[act], HAS_BIAS=True, HAS_GATE=gate is not None, HAS_RES=res is not None,
                 WANT_AMAX=True, QUANT_OUT=False)
    out = torch.empty(m, n, device=dev, dtype=bf16)
    amax = torch.zeros(1, device=dev)
    a_gs, w_gs = xq.global_scale.reshape(1), wq.global_scale.reshape(1)
    no_quant_out = (a_gs,) * 4  # the QUANT_OUT epilogue's pointers, unused

    def pointer_kernel(_):
        d.dense_pointer_gemm(a16, w16, a_gs, w_gs, bias, gate_v, gs, res_v, rs, m, out, amax, no_quant_out, flags)

    def whole(_):
        return g.gemm(*c.args)

    times = {
        "cublas_bf16": bench_graph_ms(lambda _: torch.matmul(x, w.T)),
        "cublas_bf16_epilogue": bench_graph_ms(lambda _: _epilogue(torch.matmul(x, w.T), bias, kind, gate, res)),
        "cublas_fp16_decoded": bench_graph_ms(lambda _: torch.matmul(a16, w16.T)),
        "decode_a": bench_graph_ms(lambda _: d.decode_to_f16(a2, a_scale)),
        "decode_w": bench_graph_ms(lambda _: d.decode_to_f16(wq.data, wq.scale)),
        "pointer_kernel": bench_graph_ms(pointer_kernel),
        "nvfp4_whole": bench_graph_ms(whole),
    }
    pointer_kernel(0)
    want = out.float().clone()
    errors = {}
    for tile in TILES:
        for mode, per_sm in PERSISTENCE.items():
            name = f"{tile} {mode}"
            out.fill_(float("nan"))
            try:
                run = lambda _: d.dense_tma_gemm(a16, w16, a_gs, w_gs, bias, gate_v, gs, res_v, rs, m, out, amax,  # noqa: E731
                                                 no_quant_out, flags, tile, per_sm)
                run(0)
                errors[name] = float((out.float() - want).norm() / want.norm())
                times[name] = bench_graph_ms(run)
            except Exception as exc:  # a tile that does not fit (shared memory) is reported, not fatal
                errors[name], times[name] = repr(exc)[:120], float("nan")
    for tile in DECODE_TILES:  # the activation decode at other tiles, checked against the default's bytes
        got = d.decode_to_f16(a2, a_scale, tile)
        errors[f"decode_a {tile}"] = float((got != a16).sum())
        times[f"decode_a {tile}"] = bench_graph_ms(lambda _: d.decode_to_f16(a2, a_scale, tile))
    return {"m": m, "k": k, "n": n, "epilogue": kind, "ms": times, "rel_err_vs_pointer_kernel": errors}


def run(json_path: str | None = None, models=tuple(WORKLOADS)) -> dict:
    results, rows = [], []
    variants = [f"{t} {mode}" for t in TILES for mode in PERSISTENCE]
    for model in models:
        m = WORKLOADS[model][2]
        for name, k, n, kind in block_gemms(model):
            r = _case(m, k, n, kind)
            r.update(model=model, gemm=name)
            results.append(r)
            t = r["ms"]
            finite = [v for v in variants if t[v] == t[v]]
            best = min(finite, key=lambda v: t[v]) if finite else "-"
            rows.append([model, name, f"{m}x{k}x{n}", *[t[c] * 1e3 for c in
                         ("cublas_bf16", "cublas_bf16_epilogue", "cublas_fp16_decoded", "decode_a", "decode_w",
                          "pointer_kernel", "nvfp4_whole")], best, t.get(best, float("nan")) * 1e3,
                         t["cublas_bf16_epilogue"] / t["nvfp4_whole"],
                         t["pointer_kernel"] / t.get(best, float("nan"))])
            torch.cuda.empty_cache()
    print_table("Full-chunk GEMM pieces, GPU time from CUDA graphs (us)",
                ["model", "gemm", "M x K x N", "cuBLAS bf16", "+ epilogue", "cuBLAS fp16 decoded", "decode A",
                 "decode W", "pointer kernel", "NVFP4 whole", "best TMA", "TMA us", "whole x cuBLAS+epi",
                 "TMA speed-up"], rows)
    for r in results:
        print(r["model"], r["gemm"], {v: round(r["ms"][v] * 1e3, 1) for v in variants})
        print(r["model"], r["gemm"], {f"decode_a {t}": (round(r["ms"][f"decode_a {t}"] * 1e3, 2),
                                                        r["rel_err_vs_pointer_kernel"][f"decode_a {t}"])
                                      for t in DECODE_TILES})
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--tiles", type=int, default=len(TILES), help="time only the first N TMA tiles")
    args = parser.parse_args()
    TILES[:] = TILES[:args.tiles]
    run(args.json, args.models)
