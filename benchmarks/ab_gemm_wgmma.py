"""A/B: W4A4 GEMMs at M <= 64 on the Gluon kernel (``gemm_wgmma``: cp.async ring, decode beside
asynchronous wgmma, then the split-K epilogue kernel) against the route ``gemm`` takes now (the
GEMV at M = 1, the split-K tile kernel above) and cuBLAS bf16 + the PyTorch epilogue, in one run,
at every GEMM of a Wan-1.3B and a Wan-5B block. GPU time from CUDA-graph replays, each variant
timed twice in alternation (the better counts). Each ``--configs`` entry is ring depth x output
columns per program (K steps of raw bytes in shared memory, depth - 1 in flight; 64 columns: two
programs per SM, 128: one, half the A decodes per W byte), e.g. ``3x64``.

    python benchmarks/ab_gemm_wgmma.py [--models wan-1.3b wan-5b] [--m 16 64] [--configs 2x64 3x128] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from ab_gemm import _alternating_ms  # noqa: E402
from bench_gemm import _epilogue  # noqa: E402
from common import WORKLOADS, block_gemms, finish, gemm_case, print_table  # noqa: E402


def run(models, ms, configs) -> list[dict]:
    from nvfp4_compiler.backends.triton import gemm, gemm_wgmma

    rows = []
    for model in models:
        for name, k, n, kind in block_gemms(model):
            for m in ms:
                c = gemm_case(m, k, n, kind)
                fns = {"cublas": lambda _: _epilogue(torch.matmul(c.x, c.w.T), c.bias, kind, c.gate, c.res),
                       "routed": lambda _: gemm.gemm(*c.args)}
                for config in configs:
                    def fn(_, config=config):   # the module's knobs, read at each call (also while capturing)
                        gemm_wgmma.RING, gemm_wgmma.BLOCK_N = (int(v) for v in config.split("x"))
                        return gemm.gemm(*c.args, wgmma=True)
                    fns[config] = fn
                us = _alternating_ms(fns)
                routed, _ = fns["routed"](0)
                for config in configs:
                    got, _ = fns[config](0)
                    rows.append({"model": model, "gemm": name, "m": m, "k": k, "n": n, "config": config,
                                 "cublas_us": us["cublas"], "routed_us": us["routed"], "wgmma_us": us[config],
                                 "wgmma_x_cublas": us["cublas"] / us[config],
                                 "routed_x_cublas": us["cublas"] / us["routed"],
                                 "rel_diff_vs_routed": float((got.float() - routed.float()).norm() / routed.float().norm())})
                    print(rows[-1], flush=True)
                torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--m", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--configs", nargs="+", default=["2x64", "3x64", "4x64", "3x128"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ab_gemm_wgmma.py needs a CUDA GPU (sm_90)")
    rows = run(args.models, args.m, args.configs)
    print_table("W4A4 GEMM at small M: Gluon kernel vs routed kernel vs cuBLAS bf16 + epilogue (GPU us, CUDA graphs)",
                ["model", "GEMM", "M x K x N", "ring x cols", "cuBLAS us", "routed us", "Gluon us", "Gluon x cuBLAS",
                 "routed x cuBLAS", "Gluon speed-up", "rel diff"],
                [[r["model"], r["gemm"], f"{r['m']}x{r['k']}x{r['n']}", r["config"], r["cublas_us"], r["routed_us"],
                  r["wgmma_us"], r["wgmma_x_cublas"], r["routed_x_cublas"], r["routed_us"] / r["wgmma_us"],
                  r["rel_diff_vs_routed"]] for r in rows])
    finish(args.json, rows)


if __name__ == "__main__":
    main()
