"""Sweep: the M = 1 GEMV kernel's tile (BLOCK_N, BLOCK_K, warps) on every GEMM of a Wan-1.3B and a
Wan-5B block, against cuBLAS bf16 + the PyTorch epilogue and against the tensor-core tile kernel
(split-K, its second epilogue kernel), all as GPU time from CUDA-graph replays, in one run.

    python benchmarks/sweep_gemv.py [--json out.json] [--baseline path/to/gemv.py ...]

``--baseline`` times other versions of gemv.py (e.g. the previous commit's) in the same run, one
column each (named by the file's folder), at each module's own TILE. The last row is the floor:
one empty Triton kernel per call, timed the same way.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(__file__))
from bench_gemm import _epilogue  # noqa: E402
from common import (WORKLOADS, bench_graph_ms, block_gemms, epilogue_operands, finish, print_table,  # noqa: E402
                    rotations_for)

#: (BLOCK_N, BLOCK_K, warps, programs per SM)
TILES = [(32, 256, 4, 8), (32, 128, 4, 16), (16, 256, 4, 16)]
BASELINES: dict = {}  # other gemv modules (--baseline), timed in the same run, by name


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
    bias, gate, res, act = epilogue_operands(1, n, kind)

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
    for name, module in BASELINES.items():
        current = gemv.gemv
        try:
            gemv.gemv = module.gemv  # gemm() imports gemv.gemv at each call
            times[name] = bench_graph_ms(lambda i: nvfp4_call(i, True), n_rot)
            got = nvfp4_call(0, True)[0]
            errors[name] = float((got.float() - want.float()).norm() / want.float().norm())
        finally:
            gemv.gemv = current
    default = gemv.TILE, gemv.GEMV_PROGRAMS_PER_SM
    try:
        for tile in TILES:
            gemv.TILE, gemv.GEMV_PROGRAMS_PER_SM = tile[:3], tile[3]
            got = nvfp4_call(0, True)[0]
            errors[str(tile)] = float((got.float() - want.float()).norm() / want.float().norm())
            times[str(tile)] = bench_graph_ms(lambda i: nvfp4_call(i, True), n_rot)
    finally:
        gemv.TILE, gemv.GEMV_PROGRAMS_PER_SM = default
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
                         *[t[b] * 1e3 for b in BASELINES], *[t[str(tile)] * 1e3 for tile in TILES], str(best),
                         t["cublas_bf16"] / t[str(best)], max(r["rel_err"].values())])
            torch.cuda.empty_cache()
    print_table("M = 1 GEMM + epilogue, GPU time from CUDA graphs (us); x = cuBLAS bf16 / best GEMV tile",
                ["model", "gemm", "M x K x N", "cuBLAS bf16", "tile kernel", *BASELINES,
                 *[f"GEMV {t}" for t in TILES], "best tile", "x cuBLAS", "max rel err"], rows)
    floor = bench_graph_ms(lambda i: _empty_kernel[(1,)](), 1)
    print(f"floor: one empty Triton kernel per call, {floor * 1e3:.2f} us")
    results.append({"floor_empty_kernel_ms": floor})
    return finish(json_path, results)


@triton.jit
def _empty_kernel():
    pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--baseline", action="append", default=[], help="another gemv.py to time in the same run")
    args = parser.parse_args()
    for path in args.baseline:
        import importlib.util
        name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
        BASELINES[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(BASELINES[name])
    run(args.json)
