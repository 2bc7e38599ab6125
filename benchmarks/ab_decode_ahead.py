"""A/B: the single-query decode kernel (``attention_decode.py``, Tq = 1) with its tile loads issued
one or two tiles ahead, over tiles and programs per SM, against its default and flash SDPA over a
bf16 cache, in one run, at the LongLive cache shapes.

Why: the warp-specialized wgmma kernel measured the same time as the one-warpgroup kernel with the
same bytes in flight per SM (one page ahead), and every tile / residency point of the seventeenth
session's sweep that kept ~18 KB of loads in flight per SM measured ~33 us at Wan-1.3B. If the
kernel is bound by loads in flight (Little's law), more tiles ahead should pay.

Each ``--configs`` entry is BLOCK_N x warps x tiles ahead x programs per SM (the split count's aim),
e.g. ``16x2x2x5``. GPU time from CUDA-graph replays; rel err against SDPA; the largest difference
from the default configuration.

    python benchmarks/ab_decode_ahead.py [--models wan-1.3b wan-5b] [--configs 32x2x2x4 16x2x2x5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import SHAPES, Workload, _rel_err  # noqa: E402
from common import bench_graph_ms, finish, print_table  # noqa: E402

CONFIGS = ["32x2x1x4", "32x2x2x4", "16x2x1x6", "16x2x2x5", "16x2x2x6", "16x4x2x3", "32x4x2x3"]


def run(models, configs) -> list[dict]:
    from nvfp4_compiler.backends.triton import attention_decode as dec

    rows = []
    for model in models:
        w = Workload(model)
        pages = (*w.page_args, w.npages)
        q, _ = w.inputs(1, False)
        ref, sdpa_ms = w.sdpa_baseline(q)
        base = dec.paged_decode_attention(q, *pages)
        base_ms = bench_graph_ms(lambda i: dec.paged_decode_attention(q, *pages), replays=5)
        for text in configs:
            block_n, warps, ahead, pps = (int(v) for v in text.split("x"))

            def fn(i, tile=(block_n, warps), ahead=ahead, pps=pps):
                return dec.paged_decode_attention(q, *pages, tile=tile, ahead=ahead, programs_per_sm=pps)
            out = fn(0)
            ms = bench_graph_ms(fn, replays=5)
            rows.append({"model": model, "config": text, "sdpa_ms": sdpa_ms, "default_ms": base_ms, "ms": ms,
                         "x_sdpa": sdpa_ms / ms, "x_default": base_ms / ms, "rel_err_vs_sdpa": _rel_err(out, ref),
                         "max_abs_vs_default": float((out.float() - base.float()).abs().max())})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ab_decode_ahead.py needs a CUDA GPU")
    rows = run(args.models, args.configs)
    print_table("single-query decode attention: tiles ahead x tile x programs per SM (GPU ms, CUDA graphs)",
                ["model", "config", "SDPA ms", "default ms", "ms", "x SDPA", "x default", "rel err", "max |diff|"],
                [[r["model"], r["config"], r["sdpa_ms"], r["default_ms"], r["ms"], r["x_sdpa"], r["x_default"],
                  r["rel_err_vs_sdpa"], r["max_abs_vs_default"]] for r in rows])
    finish(args.json, rows)


if __name__ == "__main__":
    main()
