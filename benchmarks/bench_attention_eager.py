"""Benchmark: one eager call of the public ``paged_attention(q, cache, seqs)`` (no CUDA graph), the
way a PyTorch generation loop without graphs calls it, against eager flash SDPA over a bf16 cache.

bench_attention.py times the kernels from page tables it built once, and reports GPU time from CUDA
graphs. Without graphs, an attention call also pays its host work: the page tables (Python over
every page, then three host-to-device copies, each of which waits for the stream's queued work)
and the launches. Two rows per shape, in one run:

    tables rebuilt   the cache's kept page tables dropped before every call (what every call did
                     before the cache kept them)
    tables kept      the tables built once and reused while the cache does not change

Times: medians of back-to-back calls (``triton.testing.do_bench``), ms per call.

    python benchmarks/bench_attention_eager.py [--models wan-1.3b wan-5b] [--tq 1 16 64] [--json out.json]
        [--profile N]   (then cProfile's top functions over N kept-table calls at the first Tq)
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import SHAPES, Workload, _rel_err  # noqa: E402
from common import arguments, bench_ms, finish, print_table  # noqa: E402


def eager_rows(model: str, tqs) -> list[dict]:
    from nvfp4_compiler.paged_attention import paged_attention

    w = Workload(model)
    rows = []
    for tq in tqs:
        q, _ = w.inputs(tq, False)
        q_t = q.transpose(1, 2)

        def sdpa(_):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q_t, w.k_bf16, w.v_bf16).transpose(1, 2)

        def rebuilt(_):
            w.cache._tables.clear()
            return paged_attention(q, w.cache, [0])

        def kept(_):
            return paged_attention(q, w.cache, [0])

        ms = {name: bench_ms(fn) for name, fn in (("sdpa_bf16", sdpa), ("tables_rebuilt", rebuilt),
                                                  ("tables_kept", kept))}
        ref = sdpa(0).float()
        rows.append({"model": model, "tq": tq, "wall_ms": ms,
                     "x_sdpa": {k: ms["sdpa_bf16"] / ms[k] for k in ("tables_rebuilt", "tables_kept")},
                     "kept_speedup": ms["tables_rebuilt"] / ms["tables_kept"],
                     "rel_err_vs_sdpa": _rel_err(kept(0).float(), ref),
                     "rebuilt_equals_kept": bool(torch.equal(rebuilt(0), kept(0)))})
    return rows


def profile_kept(model: str, tq: int, calls: int) -> None:
    """cProfile of ``calls`` eager calls with kept tables: where the host time goes."""
    import cProfile
    import pstats

    from nvfp4_compiler.paged_attention import paged_attention

    w = Workload(model)
    q, _ = w.inputs(tq, False)
    paged_attention(q, w.cache, [0])
    torch.cuda.synchronize()
    with cProfile.Profile() as prof:
        for _ in range(calls):
            paged_attention(q, w.cache, [0])
        torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main(argv=None) -> dict:
    parser = arguments(__doc__, SHAPES)
    parser.add_argument("--tq", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    if args.profile:
        profile_kept(args.models[0], args.tq[0], args.profile)
    results = [r for model in args.models for r in eager_rows(model, args.tq)]
    print_table("paged_attention eager, per call (ms, median of back-to-back calls)",
                ["model", "Tq", "SDPA bf16", "tables rebuilt", "tables kept", "kept speed-up",
                 "x SDPA rebuilt", "x SDPA kept", "rel err", "rebuilt == kept"],
                [[r["model"], r["tq"], r["wall_ms"]["sdpa_bf16"], r["wall_ms"]["tables_rebuilt"],
                  r["wall_ms"]["tables_kept"], r["kept_speedup"], r["x_sdpa"]["tables_rebuilt"],
                  r["x_sdpa"]["tables_kept"], r["rel_err_vs_sdpa"], r["rebuilt_equals_kept"]] for r in results])
    return finish(args.json, results)


if __name__ == "__main__":
    main()
