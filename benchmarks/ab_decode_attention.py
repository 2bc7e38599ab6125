"""A/B benchmark: the single-query decode attention kernel (``attention_decode.py``) from older
files against the working tree, in one run, with flash SDPA over the bf16 cache beside them; GPU
time from CUDA-graph replays, each variant timed twice in alternation (the better counts).

    mkdir -p .baseline/before && for f in attention_decode.py numerics.py; do
        git show HEAD~1:nvfp4_compiler/backends/triton/$f > .baseline/before/$f; done
    python benchmarks/ab_decode_attention.py --before .baseline/before [--json out.json]

Rows: Tq = 1 over the Wan-1.3B and Wan-5B sink + window caches of bench_attention.py, at each
(BLOCK_N, warps) tile and programs-per-SM target given (the first is each variant's default).
Both variants' outputs are compared with SDPA and with each other.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from ab_gemm import _alternating_ms, ab_arguments, before_package, parse_ab_arguments  # noqa: E402
from bench_attention import SHAPES, Workload, _rel_err  # noqa: E402
from common import finish, print_table  # noqa: E402

TILES = (None, (16, 4), (32, 2), (64, 4), (32, 8))
PROGRAMS_PER_SM = (4, 8)


def decode_rows(model: str, variants: dict, tiles=TILES, programs_per_sm=PROGRAMS_PER_SM) -> list[dict]:
    w = Workload(model)
    q, _ = w.inputs(1, False)
    pages = (*w.page_args, w.npages)
    sdpa = w.routes(q, None)["sdpa_bf16"]
    ref = sdpa(0).float()
    rows = []
    for tile in tiles:
        for pps in programs_per_sm:
            fns = {"sdpa_bf16": sdpa}
            for name, mod in variants.items():
                splits = mod.choose_decode_splits(w.heads, w.table.shape[1], q.device, pps)
                fns[name] = lambda _, mod=mod, splits=splits: mod.paged_decode_attention(q, *pages, tile=tile, splits=splits)
            try:
                us = _alternating_ms(fns)
            except Exception as e:  # a tile that does not compile is a result too
                print(f"{model} tile {tile} pps {pps}: {type(e).__name__}: {str(e)[:160]}")
                continue
            outs = {name: fns[name](0).float() for name in variants}
            rows.append({"model": model, "tq": 1, "tile": tile, "programs_per_sm": pps, "us": us,
                         "x_sdpa": {name: us["sdpa_bf16"] / us[name] for name in variants},
                         "rel_err_vs_sdpa": {name: _rel_err(o, ref) for name, o in outs.items()},
                         "rel_diff_before_after": _rel_err(outs["after"], outs["before"])})
    return rows


def run(before_dir: str, json_path: str | None = None, models=tuple(SHAPES), tiles=TILES,
        programs_per_sm=PROGRAMS_PER_SM) -> dict:
    from nvfp4_compiler.backends.triton import attention_decode

    before = importlib.import_module(f"{before_package(before_dir)}.attention_decode")
    variants = {"before": before, "after": attention_decode}
    results = [r for model in models for r in decode_rows(model, variants, tiles, programs_per_sm)]
    print_table("decode attention, Tq = 1: before vs after, GPU time from CUDA graphs (us)",
                ["model", "tile", "programs/SM", "SDPA bf16", "before", "after", "after speed-up",
                 "x SDPA before", "x SDPA after", "rel err before", "rel err after", "before vs after"],
                [[r["model"], r["tile"] or "default", r["programs_per_sm"], r["us"]["sdpa_bf16"], r["us"]["before"],
                  r["us"]["after"], r["us"]["before"] / r["us"]["after"], r["x_sdpa"]["before"], r["x_sdpa"]["after"],
                  r["rel_err_vs_sdpa"]["before"], r["rel_err_vs_sdpa"]["after"], r["rel_diff_before_after"]]
                 for r in results])
    return finish(json_path, results)


if __name__ == "__main__":
    parser = ab_arguments(__doc__, SHAPES)
    parser.add_argument("--tiles", nargs="+", default=None, metavar="BLOCK_N,WARPS",
                        help="tiles to time (default: each variant's own, then %s)" % " ".join(f"{n},{w}" for n, w in TILES[1:]))
    parser.add_argument("--programs-per-sm", nargs="+", type=int, default=list(PROGRAMS_PER_SM))
    args = parse_ab_arguments(parser)
    tiles = TILES
    if args.tiles:
        try:
            tiles = tuple(None if t == "default" else tuple(int(v) for v in t.split(",")) for t in args.tiles)
        except ValueError:
            parser.error(f"--tiles: expected BLOCK_N,WARPS pairs or 'default', got {args.tiles}")
    run(args.before, args.json, args.models, tiles, tuple(args.programs_per_sm))
