"""A/B: decode-sized attention (16-64 queries) on the warp-specialized Gluon kernel
(``attention_wgmma_ws``) against the single-warpgroup Gluon kernel (``attention_wgmma``, what
``paged_attention`` routes 24-64 queries to) and flash SDPA over a bf16 cache, in one run, at the
LongLive cache shapes.

Each ``--configs`` entry is producer warps x producer registers x launch register cap x ring depth
x pages requested ahead (e.g. ``8x152x168x2x3``); each runs at its default split count and at each of ``--splits``. GPU time
from CUDA-graph replays; rel err against SDPA; the largest difference from the wgmma kernel.

    python benchmarks/ab_decode_ws.py [--models wan-1.3b wan-5b] [--tq 16 32 64]
                                      [--configs 8x152x168x2x3 8x128x168x2x1] [--splits 22] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import SHAPES, Workload, against_wgmma, wgmma_baseline  # noqa: E402
from common import finish, print_table  # noqa: E402


def _config(text: str) -> dict:
    warps, regs, cap, nbuf, ahead = (int(v) for v in text.split("x"))
    return {"producer_warps": warps, "producer_regs": regs, "max_regs": cap, "nbuf": nbuf, "ahead": ahead}


def run(models, tqs, configs, split_counts) -> list[dict]:
    from nvfp4_compiler.backends.triton import attention_wgmma_ws as ws

    rows = []
    for model in models:
        w = Workload(model)
        for tq in tqs:
            base = wgmma_baseline(w, tq)
            for text in configs:
                cfg = _config(text)
                default = ws.choose_splits(w.heads, w.table.shape[1], base["q"].device,
                                           ws.resident_per_sm(cfg["producer_warps"], cfg["max_regs"]))
                for splits in [default] + [s for s in split_counts if s != default]:
                    def fn(i, splits=splits, cfg=cfg):
                        return ws.paged_decode_ws(base["q"], *base["pages"], splits=splits, **cfg)
                    rows.append({"model": model, "tq": tq, "config": text, "splits": splits,
                                 "default": splits == default, **against_wgmma(fn, base, "ws")})
                    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tq", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--configs", nargs="+", default=["8x128x168x2x1"])
    parser.add_argument("--splits", nargs="*", type=int, default=[])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ab_decode_ws.py needs a CUDA GPU (sm_90)")
    rows = run(args.models, args.tq, args.configs, args.splits)
    print_table("decode attention: warp-specialized Gluon kernel vs wgmma kernel vs flash SDPA (GPU ms, CUDA graphs)",
                ["model", "Tq", "config", "splits", "SDPA ms", "wgmma ms", "ws ms", "x SDPA", "x wgmma",
                 "wgmma x SDPA", "rel err", "max |ws - wgmma|"],
                [[r["model"], r["tq"], r["config"], r["splits"], r["sdpa_ms"], r["wgmma_ms"], r["ws_ms"], r["x_sdpa"],
                  r["x_wgmma"], r["wgmma_x_sdpa"], r["rel_err_vs_sdpa"], r["max_abs_vs_wgmma"]] for r in rows])
    finish(args.json, rows)


if __name__ == "__main__":
    main()
