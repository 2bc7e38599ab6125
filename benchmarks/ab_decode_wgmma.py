"""A/B: decode-sized attention (2-64 queries) on the Gluon wgmma kernel against the plain Triton
tensor-core kernel and flash SDPA over a bf16 cache, in one run, at the LongLive cache shapes.

For each model and Tq: GPU time (CUDA-graph replays) of SDPA (bf16 cache), the Triton kernel
(``attention.paged_attention``, its default tile and splits) and the Gluon kernel
(``attention_wgmma.paged_decode_wgmma``) at its default split count and at each of ``--splits``;
rel err of both kernels against SDPA, and the largest difference between the two kernels.

    python benchmarks/ab_decode_wgmma.py [--models wan-1.3b wan-5b] [--tq 8 16 32 64] [--splits 11 22 33]
                                         [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import SHAPES, Workload, _rel_err  # noqa: E402
from common import bench_graph_ms, finish, print_table  # noqa: E402


def run(models, tqs, split_counts) -> list[dict]:
    from nvfp4_compiler.backends.triton.attention_wgmma import choose_splits, paged_decode_wgmma

    rows = []
    for model in models:
        w = Workload(model)
        pages = w.page_args
        for tq in tqs:
            q, _ = w.inputs(tq, False)
            fns = w.routes(q, None)
            ref, sdpa_ms = w.sdpa_baseline(q)
            triton_ms = bench_graph_ms(fns["in_register"], replays=5)
            triton_out = fns["in_register"](0)
            default = choose_splits(w.heads, w.table.shape[1], q.device)
            for splits in [None] + [s for s in split_counts if s != default]:
                def gluon(i, splits=splits):
                    return paged_decode_wgmma(q, *pages, w.npages, splits=splits)
                out = gluon(0)
                ms = bench_graph_ms(gluon, replays=5)
                rows.append({"model": model, "tq": tq, "splits": splits or default, "default": splits is None,
                             "sdpa_ms": sdpa_ms, "triton_ms": triton_ms, "wgmma_ms": ms,
                             "x_sdpa": sdpa_ms / ms, "x_triton": triton_ms / ms, "triton_x_sdpa": sdpa_ms / triton_ms,
                             "rel_err_vs_sdpa": _rel_err(out, ref), "triton_rel_err_vs_sdpa": _rel_err(triton_out, ref),
                             "max_abs_vs_triton": float((out.float() - triton_out.float()).abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tq", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--splits", nargs="*", type=int, default=[])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ab_decode_wgmma.py needs a CUDA GPU (sm_90)")
    rows = run(args.models, args.tq, args.splits)
    print_table("decode attention: Gluon wgmma kernel vs Triton kernel vs flash SDPA (GPU ms, CUDA graphs)",
                ["model", "Tq", "splits", "SDPA ms", "Triton ms", "wgmma ms", "x SDPA", "x Triton", "Triton x SDPA",
                 "rel err", "max |wgmma - Triton|"],
                [[r["model"], r["tq"], r["splits"], r["sdpa_ms"], r["triton_ms"], r["wgmma_ms"], r["x_sdpa"],
                  r["x_triton"], r["triton_x_sdpa"], r["rel_err_vs_sdpa"], r["max_abs_vs_triton"]] for r in rows])
    finish(args.json, rows)


if __name__ == "__main__":
    main()
