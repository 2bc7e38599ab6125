"""Sweep: the persistent TMA GEMM's tile per shape (dense_gemm.choose_tile), GPU time of the kernel
alone on decoded operands, from CUDA-graph replays, every variant in one run:

- each tile of dense_gemm.TILE_SPEED (BLOCK_M x BLOCK_N x warps x stages) forced for the whole GEMM;
- any ``--extra`` tiles (BLOCK_M x BLOCK_N x warps x stages, e.g. 64x128x4x4);
- "auto": what dense_tma_gemm picks by default;
- cuBLAS fp16 on the same decoded operands, for scale.

Shapes: GEMMs with fewer 128 x 256 tiles than the H100's 132 SMs (text K/V projections of 512
tokens, chunks of 600-1024 tokens, a training wgrad), and two full-chunk GEMMs as a check that
their tile does not change.

    python benchmarks/sweep_tma_tiles.py [--json out.json] [--extra 64x128x4x4 ...] [--few-tiles-only]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import bench_graph_ms, finish, gemm_case, print_table  # noqa: E402

#: (label, M, K, N)
SHAPES = [("wan-1.3b text k/v", 512, 1536, 1536), ("wan-5b text k/v", 512, 3072, 3072),
          ("600 tokens, wan-1.3b attn", 600, 1536, 1536), ("1024 tokens, wan-1.3b attn", 1024, 1536, 1536),
          ("1024 tokens, wan-1.3b ffn down", 1024, 8960, 1536), ("1024 tokens, wan-5b attn", 1024, 3072, 3072),
          ("wan-1.3b wgrad attn", 1536, 4688, 1536), ("wan-1.3b ffn down", 4680, 8960, 1536),
          ("wan-5b attn", 7040, 3072, 3072)]


#: Extra (BLOCK_M, BLOCK_N, warps, stages) tiles to time (``--extra``).
EXTRA_TILES: list[tuple[int, ...]] = []


def _label(tile) -> str:
    """BLOCK_M x BLOCK_N x warps x stages of a (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) tile."""
    return "x".join(map(str, (*tile[:2], *tile[3:])))


def _tiles() -> dict:
    """name -> (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) of every tile timed: TILE_SPEED's, then
    the extra ones."""
    from nvfp4_compiler.backends.triton import dense_gemm as d

    full = [(t[0], t[1], d.TMA_TILE[2], t[2], t[3]) for t in [*d.TILE_SPEED, *EXTRA_TILES]]
    return {_label(t): t for t in full}


def _short_of_one_wave(m: int, n: int) -> bool:
    """Fewer TMA_TILE tiles than SMs: the shapes choose_tile may give a smaller tile."""
    from nvfp4_compiler.backends.triton import dense_gemm as d

    tiles = -(-m // d.TMA_TILE[0]) * -(-n // d.TMA_TILE[1])
    return tiles < d._num_sms(torch.device("cuda"))


def _row(m: int, k: int, n: int) -> dict:
    from nvfp4_compiler.backends.triton import dense_gemm as d
    from nvfp4_compiler.backends.triton import gemm as g

    c = gemm_case(m, k, n, "bias")
    a16, w16 = d.decode_to_f16(c.xq.data.reshape(m, k // 2), c.xq.scale.reshape(m, k // 16), w_data=c.wq.data,
                               w_scale=c.wq.scale)
    none_v, none_s = g._as_btn(None, torch.Size([m, n]), "cuda")
    flags = dict(ACT=0, HAS_BIAS=True, HAS_GATE=False, HAS_RES=False, WANT_AMAX=True, QUANT_OUT=False)
    a_gs, w_gs = c.xq.global_scale.reshape(1), c.wq.global_scale.reshape(1)
    out, amax = torch.empty(m, n, device="cuda", dtype=torch.bfloat16), torch.zeros(1, device="cuda")
    variants = {**_tiles(), "auto": None}

    def launch(tile):
        return lambda _: d.dense_tma_gemm(a16, w16, a_gs, w_gs, c.bias, none_v, none_s, none_v, none_s, m, out, amax,
                                          (a_gs,) * 4, flags, tile=tile)

    launch(d.TMA_TILE)(0)
    want = out.clone()
    times, diffs = {"cublas_fp16_decoded": bench_graph_ms(lambda _: torch.matmul(a16, w16.T))}, {}
    for name, tile in variants.items():
        out.fill_(float("nan"))
        launch(tile)(0)
        diffs[name] = float((out.float() - want.float()).abs().max())  # nan: an element left unwritten
        times[name] = bench_graph_ms(launch(tile))
    auto = d.choose_tile(m, n, d.TMA_TILE, d._num_sms(a16.device))
    return {"ms": times, "max_abs_diff_vs_main_tile": diffs, "auto_tile": list(auto)}


def run(json_path: str | None = None, shapes=SHAPES) -> dict:
    from nvfp4_compiler.backends.triton import dense_gemm as d

    names = list(_tiles())
    main = _label(d.TMA_TILE)
    results, rows = [], []
    for label, m, k, n in shapes:
        r = _row(m, k, n)
        r.update(gemm=label, m=m, k=k, n=n)
        results.append(r)
        t = r["ms"]
        rows.append([label, f"{m}x{k}x{n}", t["cublas_fp16_decoded"] * 1e3, *[t[v] * 1e3 for v in names],
                     _label(r["auto_tile"]), t["auto"] * 1e3, t[main] / t["auto"],
                     max(r["max_abs_diff_vs_main_tile"].values())])
        print(rows[-1], flush=True)  # as it goes: a run cut off by a time limit still shows its rows
        torch.cuda.empty_cache()
    print_table(f"TMA GEMM tile per shape: GPU us (same run); auto x = {main} time / auto time",
                ["gemm", "M x K x N", "cuBLAS fp16", *names, "auto tile", "auto", "auto x", "max |diff|"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--extra", nargs="*", default=[], help="more tiles to time, BLOCK_MxBLOCK_NxWARPSxSTAGES")
    parser.add_argument("--few-tiles-only", action="store_true",
                        help="only the shapes with fewer 128 x 256 tiles than SMs")
    args = parser.parse_args()
    EXTRA_TILES += [tuple(int(v) for v in spec.split("x")) for spec in args.extra]
    run(args.json, [s for s in SHAPES if _short_of_one_wave(s[1], s[3])] if args.few_tiles_only else SHAPES)
