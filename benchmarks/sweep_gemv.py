"""Sweep: the M = 1 GEMV kernel's tile (BLOCK_N, BLOCK_K, warps) on every GEMM of a Wan-1.3B and a
Wan-5B block, against cuBLAS bf16 + the PyTorch epilogue and against the tensor-core tile kernel
(split-K, its second epilogue kernel), all as GPU time from CUDA-graph replays, in one run.

    python benchmarks/sweep_gemv.py [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_gemm import _epilogue  # noqa: E402
from common import WORKLOADS, bench_graph_ms, block_gemms, finish, print_table, rotations_for  # noqa: E402

TILES = [(64, 256, 4), (64, 256, 8), (32, 256, 4), (128, 128, 8), (32, 512, 4)]


def _case(k: int, n: int, kind: str) -> dict:
    import nvfp4_compiler as nvfp4
    from nvfp4_compiler.backends import reference
    from nvfp4_compiler.backends.triton import gemv
    from nvfp4_compiler.backends.triton.gemm import gemm

    dev, bf16 = "cuda", torch.bfloat16
    n_rot = rotations_for(n * k * 2)
    ws = [torch.randn(n, k, device=dev, dtype=bf16) / k**0.5 for _ in range(n_rot)]
    xs = [torch.randn(1, k, device=dev, dtype=bf16) for _ in range(n_rot)]
    wq, xq = [nvfp4.quantize(w) for w in ws], [nvfp4.quantize(x) for x in xs]
    bias = torch.randn(n, device=dev, dtype=bf16)
    gate = torch.randn(1, n, device=dev, dtype=bf16) if "gate" in kind else None
    res = torch.randn(1, n, device=dev, dtype=bf16) if "gate" in kind else None
    act = "gelu_tanh" if "gelu" in kind else "none"

    def nvfp4_call(i, vector):
        a, w = xq[i], wq[i]
        return gemm(a.data, a.scale, a.global_scale, w.data, w.scale, w.global_scale, bias, act, gate, res, bf16,
                    vector=vector)

    want, _ = reference.gemm_op(xq[0].data, xq[0].scale, xq[0].global_scale, wq[0].data, wq[0].scale,
                                wq[0].global_scale, bias, act, gate, res, bf16)
    times = {"cublas_bf16": bench_graph_ms(lambda i: _epilogue(torch.matmul(xs[i], ws[i].T), bias, kind, gate, res),
                                           n_rot),
             "tile_kernel": bench_graph_ms(lambda i: nvfp4_call(i, False), n_rot)}
    errors = {}
    default = gemv.TILE
    try:
        for tile in TILES:
            gemv.TILE = tile
            got = nvfp4_call(0, True)[0]
            errors[str(tile)] = float((got.float() - want.float()).norm() / want.float().norm())
            times[str(tile)] = bench_graph_ms(lambda i: nvfp4_call(i, True), n_rot)
    finally:
        gemv.TILE = default
    return {"k": k, "n": n, "epilogue": kind, "ms": times, "rel_err": errors}


def run(json_path: str | None = None) -> dict:
    results, rows = [], []
    for model in WORKLOADS:
        for name, k, n, kind in block_gemms(model):
            r = _case(k, n, kind)
            r.update(model=model, gemm=name)
            results.append(r)
            t = r["ms"]
            best = min(TILES, key=lambda tile: t[str(tile)])
            rows.append([model, name, f"1x{k}x{n}", t["cublas_bf16"] * 1e3, t["tile_kernel"] * 1e3,
                         *[t[str(tile)] * 1e3 for tile in TILES], str(best), t["cublas_bf16"] / t[str(best)],
                         max(r["rel_err"].values())])
            torch.cuda.empty_cache()
    print_table("M = 1 GEMM + epilogue, GPU time from CUDA graphs (us); x = cuBLAS bf16 / best GEMV tile",
                ["model", "gemm", "M x K x N", "cuBLAS bf16", "tile kernel", *[f"GEMV {t}" for t in TILES],
                 "best tile", "x cuBLAS", "max rel err"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    run(parser.parse_args().json)
