"""A/B: the single-query decode kernel (``attention_decode.py``, Tq = 1) with its tile loads issued
one to three tiles ahead, held in registers or staged through shared memory (cp.async), over tiles
and programs per SM, against its default and flash SDPA over a bf16 cache, in one run, at the
LongLive cache shapes.

Why: the warp-specialized wgmma kernel measured the same time as the one-warpgroup kernel with the
same bytes in flight per SM (one page ahead), and every tile / residency point of the seventeenth
session's sweep that kept ~18 KB of loads in flight per SM measured ~33 us at Wan-1.3B. If the
kernel is bound by loads in flight (Little's law), more tiles ahead should pay. In registers that
costs registers (and so programs per SM); staged, the ring costs shared memory only (4.6 KB per
tile at (32, 2)).

Each ``--configs`` entry is BLOCK_N x warps x tiles ahead x programs per SM (the split count's aim),
with an ``s`` after the tiles ahead for staged loads, e.g. ``32x2x3sx4``. GPU time from CUDA-graph
replays; rel err against SDPA; the largest difference from the default configuration.

    python benchmarks/ab_decode_ahead.py [--models wan-1.3b wan-5b] [--configs 32x2x2x4 32x2x3sx4] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import SHAPES, Workload, _rel_err  # noqa: E402
from common import bench_graph_ms, finish, print_table  # noqa: E402

# Registers per thread, compiled for sm_90 as launched (Triton 3.6): (32, 2) 239 at one tile ahead,
# 248 at two; staged 239-244; (32, 4) staged three ahead 128. So every point holds 4 programs per SM.
CONFIGS = ["32x2x1x4", "32x2x2x4", "32x2x1sx4", "32x2x2sx4", "32x2x3sx4", "32x4x3sx4", "16x2x3sx4"]


def parse_config(text: str) -> dict:
    """``32x2x3sx4`` -> tile (32, 2), 3 tiles ahead, staged, 4 programs per SM."""
    block_n, warps, ahead, pps = text.split("x")
    return {"tile": (int(block_n), int(warps)), "ahead": int(ahead.rstrip("s")), "staged": ahead.endswith("s"),
            "programs_per_sm": int(pps)}


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
            def fn(i, options=parse_config(text)):
                return dec.paged_decode_attention(q, *pages, **options)
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
    print_table("single-query decode attention: tile x tiles ahead (s: staged) x programs per SM (GPU ms, CUDA graphs)",
                ["model", "config", "SDPA ms", "default ms", "ms", "x SDPA", "x default", "rel err", "max |diff|"],
                [[r["model"], r["config"], r["sdpa_ms"], r["default_ms"], r["ms"], r["x_sdpa"], r["x_default"],
                  r["rel_err_vs_sdpa"], r["max_abs_vs_default"]] for r in rows])
    finish(args.json, rows)


if __name__ == "__main__":
    main()
