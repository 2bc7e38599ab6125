"""Benchmark: Triton W4A4 GEMM + fused epilogue vs cuBLAS bf16 and vs dequantize-then-matmul.

For every GEMM of a Wan-1.3B and a Wan-5B block, at a full chunk and at M = 1, 16, 64, in one run:
    cublas_bf16     torch.matmul(x, W^T) then the same epilogue in PyTorch
    dequant_matmul  the plain PyTorch route: dequantize NVFP4 W (and x) to bf16, matmul, epilogue
    nvfp4_gemm      Triton W4A4 GEMM with fused epilogue (activation already NVFP4)
    nvfp4_q+gemm    the same plus quantizing the bf16 activation first (what a graph pays
                    when the producer's epilogue did not hand over the amax)
Inputs rotate through enough copies that memory-bound cases read HBM, not L2.

    python benchmarks/bench_gemm.py [--json out.json] [--models wan-1.3b wan-5b]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import (  # noqa: E402
    SMALL_M,
    WORKLOADS,
    bench_graph_ms,
    bench_ms,
    block_gemms,
    epilogue_operands,
    finish,
    print_table,
    rotations_for,
)


def _epilogue(y, bias, kind, gate, res):
    y = y + bias
    if "gelu" in kind:
        y = F.gelu(y, approximate="tanh")
    if "gate" in kind:
        y = res + y * gate
    return y


def _case(m: int, k: int, n: int, kind: str) -> dict:
    import nvfp4_compiler as nvfp4
    from nvfp4_compiler.backends.triton.gemm import gemm
    from nvfp4_compiler.backends.triton.quantize import quantize as tq

    dev, bf16 = "cuda", torch.bfloat16
    w_bytes_bf16 = n * k * 2
    n_rot = rotations_for(w_bytes_bf16 + m * k * 2)
    ws = [torch.randn(n, k, device=dev, dtype=bf16) / k**0.5 for _ in range(n_rot)]
    xs = [torch.randn(m, k, device=dev, dtype=bf16) for _ in range(n_rot)]
    wq = [nvfp4.quantize(w) for w in ws]
    xq = [nvfp4.quantize(x) for x in xs]
    bias, gate, res, act = epilogue_operands(m, n, kind)

    def cublas(i):
        return _epilogue(torch.matmul(xs[i], ws[i].T), bias, kind, gate, res)

    def dequant(i):
        w_hat = wq[i].dequantize(bf16)
        x_hat = xq[i].dequantize(bf16)
        return _epilogue(torch.matmul(x_hat, w_hat.T), bias, kind, gate, res)

    def fused(i):
        a, w = xq[i], wq[i]
        return gemm(a.data, a.scale, a.global_scale, w.data, w.scale, w.global_scale, bias, act, gate, res, bf16)

    def quant_fused(i):
        d, s, g = tq(xs[i], None)
        w = wq[i]
        return gemm(d, s, g, w.data, w.scale, w.global_scale, bias, act, gate, res, bf16)

    # correctness in the same run: the fused kernel against the reference backend
    from nvfp4_compiler.backends import reference

    a, w = xq[0], wq[0]
    want, _ = reference.gemm_op(a.data, a.scale, a.global_scale, w.data, w.scale, w.global_scale,
                                bias, act, gate, res, bf16)
    got = fused(0)[0]
    rel = float((got.float() - want.float()).norm() / want.float().norm())

    times = {name: bench_ms(fn, n_rot) for name, fn in
             [("cublas_bf16", cublas), ("dequant_matmul", dequant), ("nvfp4_gemm", fused), ("nvfp4_q+gemm", quant_fused)]}
    # GPU time alone, from CUDA graph replays (no launch overhead): how a serving loop runs, and the
    # fair measure where Python launches cost as much as the kernels (small M, Wan-1.3B attention)
    times["cublas_bf16_graph"] = bench_graph_ms(cublas, n_rot)
    times["nvfp4_gemm_graph"] = bench_graph_ms(fused, n_rot)
    flops = 2 * m * n * k
    return {"m": m, "k": k, "n": n, "epilogue": kind, "ms": times, "rel_err_vs_reference": rel,
            "speedup_vs_cublas": times["cublas_bf16"] / times["nvfp4_gemm"],
            "speedup_q+gemm_vs_cublas": times["cublas_bf16"] / times["nvfp4_q+gemm"],
            "speedup_vs_dequant": times["dequant_matmul"] / times["nvfp4_gemm"],
            "speedup_vs_cublas_graph": times["cublas_bf16_graph"] / times["nvfp4_gemm_graph"],
            "tflops_nvfp4": flops / times["nvfp4_gemm"] / 1e9, "tflops_cublas": flops / times["cublas_bf16"] / 1e9}


def run(json_path: str | None = None, models=tuple(WORKLOADS), small_only: bool = False,
        full_only: bool = False) -> dict:
    results, rows = [], []
    for model in models:
        tokens = WORKLOADS[model][2]
        for name, k, n, kind in block_gemms(model):
            for m in (SMALL_M if small_only else (tokens,) if full_only else (*SMALL_M, tokens)):
                r = _case(m, k, n, kind)
                r.update(model=model, gemm=name)
                results.append(r)
                t = r["ms"]
                rows.append([model, name, f"{m}x{k}x{n}", t["cublas_bf16"] * 1e3, t["dequant_matmul"] * 1e3,
                             t["nvfp4_gemm"] * 1e3, t["nvfp4_q+gemm"] * 1e3, r["speedup_vs_cublas"],
                             r["speedup_q+gemm_vs_cublas"], r["speedup_vs_cublas_graph"],
                             r["rel_err_vs_reference"]])
                torch.cuda.empty_cache()
    print_table("W4A4 GEMM + epilogue (us, median); speed-up = cuBLAS bf16 time / NVFP4 time",
                ["model", "gemm", "M x K x N", "cuBLAS bf16", "dequant+mm", "NVFP4", "quant+NVFP4",
                 "x cuBLAS", "x cuBLAS (q+gemm)", "x cuBLAS (graphs)", "rel err"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--small-only", action="store_true", help="only the memory-bound M <= 64 rows")
    parser.add_argument("--full-only", action="store_true", help="only the full-chunk rows")
    args = parser.parse_args()
    run(args.json, args.models, args.small_only, args.full_only)
