"""Sweep: the split-K count of the small-M tensor-core tile kernel (M = 16, 64) on every GEMM of a
Wan-1.3B and a Wan-5B block, against the count ``choose_split_k`` picks, GPU time from CUDA-graph
replays in one run. Each row also names the tile the autotuner chose and how many waves of SMs
(programs / SM count) the grid makes, so a rule can be read off the table.

    python benchmarks/sweep_split_k.py [--json out.json] [--models wan-1.3b ...] [--rows 64]
"""

from __future__ import annotations

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(__file__))
from common import WORKLOADS, arguments, bench_graph_ms, block_gemms, finish, gemm_case, print_table  # noqa: E402

SPLITS = (1, 2, 3, 4, 6, 8, 11, 12, 16, 22)
MIN_K_PER_SPLIT = 128


def sweep_row(m: int, k: int, n: int, kind: str) -> dict:
    from nvfp4_compiler.backends.triton import gemm

    operands = gemm_case(m, k, n, kind).args
    default = gemm.choose_split_k(m, n, k, torch.device("cuda"))
    sms = gemm._num_sms(torch.device("cuda"))
    want = gemm.gemm(*operands, split_k=default)[0].float()
    us, tiles, waves = {}, {}, {}
    for split in sorted({default, *(s for s in SPLITS if k // s >= MIN_K_PER_SPLIT)}):
        got = gemm.gemm(*operands, split_k=split)[0].float()
        assert (got - want).norm() <= 1e-2 * want.norm(), f"split {split}: result differs"  # fp32 sum order only
        us[split] = bench_graph_ms(lambda _, s=split: gemm.gemm(*operands, split_k=s)) * 1e3
        cfg = gemm.gemm_kernel.best_config.kwargs
        tiles[split] = (cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"])
        waves[split] = triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]) * split / sms
    best = min(us, key=us.get)
    return {"m": m, "k": k, "n": n, "default_split": default, "best_split": best, "us": us, "tiles": tiles,
            "waves": waves, "default_over_best": us[default] / us[best]}


def run(json_path: str | None = None, models=tuple(WORKLOADS), row_counts=(16, 64)) -> dict:
    results, rows = [], []
    for model in models:
        for name, k, n, kind in block_gemms(model):
            for m in row_counts:
                r = sweep_row(m, k, n, kind)
                r.update(model=model, gemm=name)
                results.append(r)
                d, b = r["default_split"], r["best_split"]
                rows.append([model, name, f"{m}x{k}x{n}", d, r["us"][d], f"{r['waves'][d]:.2f}", b, r["us"][b],
                             f"{r['waves'][b]:.2f}", str(r["tiles"][b]), r["default_over_best"]])
                torch.cuda.empty_cache()
    print_table("split-K count of the small-M tile kernel, GPU time from CUDA graphs (us)",
                ["model", "GEMM", "M x K x N", "default split", "us", "waves", "best split", "us", "waves",
                 "tile (best)", "default / best"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = arguments(__doc__, WORKLOADS)
    parser.add_argument("--rows", nargs="+", type=int, default=[16, 64], help="activation row counts M to sweep")
    args = parser.parse_args()
    run(args.json, args.models, tuple(args.rows))
