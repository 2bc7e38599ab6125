"""A/B benchmark: the Triton backend's GEMM (and amax kernel) from older files against the working
tree, in one run, with cuBLAS bf16 + the PyTorch epilogue beside them; GPU time from CUDA-graph
replays, each variant timed twice in alternation (the better of the two counts).

The older files are copied over a copy of ``backends/triton`` (as ``backends/ab_before``), so a
change to any of its modules can be timed against the commit before it:

    mkdir -p .baseline/before && for f in gemm.py gemv.py quantize.py dense_gemm.py; do
        git show HEAD~1:nvfp4_compiler/backends/triton/$f > .baseline/before/$f; done
    python benchmarks/ab_gemm.py --before .baseline/before [--json out.json]

(``.baseline`` is git-ignored; the device tool carries it with ``carry``.) Rows: every GEMM of a
Wan-1.3B and a Wan-5B block at M = 1, 16, 64 and the full chunk (``--small-only`` / ``--full-only``:
one or the other, as bench_gemm.py), then the per-tensor amax kernel at two activation shapes.
Outputs and amax of the two variants are compared bit for bit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_gemm import _epilogue  # noqa: E402
from common import WORKLOADS, arguments, bench_graph_ms, block_gemms, finish, gemm_case, print_table  # noqa: E402

BACKEND = os.path.join(os.path.dirname(__file__), "..", "nvfp4_compiler", "backends", "triton")
BEFORE_PACKAGE = "ab_before"
AMAX_SHAPES = ((4680, 8960), (7040, 14336))


def before_package(before_dir: str) -> str:
    """Copy ``backends/triton`` to ``backends/ab_before``, replace its files by those in
    ``before_dir``, and return the copy's package name."""
    dst = os.path.join(BACKEND, "..", BEFORE_PACKAGE)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(BACKEND, dst)
    for name in os.listdir(before_dir):
        if name.endswith(".py"):
            shutil.copy(os.path.join(before_dir, name), dst)
    return f"nvfp4_compiler.backends.{BEFORE_PACKAGE}"


def ab_arguments(doc: str, models) -> argparse.ArgumentParser:
    """The command line every A/B script shares: --before, --json, --models."""
    parser = arguments(doc, models)
    parser.add_argument("--before", required=True, help="folder of older backends/triton/*.py files")
    return parser


def parse_ab_arguments(parser: argparse.ArgumentParser):
    """Parsed arguments; a --before that is not a folder is a usage error naming it."""
    args = parser.parse_args()
    if not os.path.isdir(args.before):
        parser.error(f"--before: expected a folder of backends/triton/*.py files, got {args.before!r}")
    return args


def load_before(before_dir: str):
    """(gemm, quantize) modules of a backend copy whose files from ``before_dir`` replace the tree's."""
    base = before_package(before_dir)
    return importlib.import_module(f"{base}.gemm"), importlib.import_module(f"{base}.quantize")


def _alternating_ms(fns: dict) -> dict:
    """Best of two timings per variant, taken A, B, A, B (drift hits both)."""
    times = {name: [] for name in fns}
    for _ in range(2):
        for name, fn in fns.items():
            times[name].append(bench_graph_ms(fn) * 1e3)
    return {name: min(t) for name, t in times.items()}


def gemm_row(variants: dict, m: int, k: int, n: int, kind: str) -> dict:
    c = gemm_case(m, k, n, kind)
    fns = {name: (lambda _, g=g: g.gemm(*c.args)) for name, (g, _) in variants.items()}
    us = _alternating_ms({"cublas_epilogue": lambda _: _epilogue(torch.matmul(c.x, c.w.T), c.bias, kind, c.gate, c.res),
                          **fns})
    (out_b, amax_b), (out_a, amax_a) = (fns[name](0) for name in ("before", "after"))
    return {"m": m, "k": k, "n": n, "epilogue": kind, "us": us,
            "bit_identical": bool(torch.equal(out_b, out_a) and torch.equal(amax_b, amax_a))}


def run(before_dir: str, json_path: str | None = None, models=tuple(WORKLOADS), small_only: bool = False,
        full_only: bool = False) -> dict:
    from nvfp4_compiler.backends.triton import gemm, quantize

    variants = {"before": load_before(before_dir), "after": (gemm, quantize)}
    results, rows = [], []
    for model in models:
        for name, k, n, kind in block_gemms(model):
            full_chunk = WORKLOADS[model][2]
            for m in (1, 16, 64) if small_only else (full_chunk,) if full_only else (1, 16, 64, full_chunk):
                r = gemm_row(variants, m, k, n, kind)
                r.update(model=model, gemm=name)
                results.append(r)
                us = r["us"]
                rows.append([model, name, f"{m}x{k}x{n}", us["cublas_epilogue"], us["before"], us["after"],
                             us["before"] / us["after"], us["cublas_epilogue"] / us["before"],
                             us["cublas_epilogue"] / us["after"], r["bit_identical"]])
                torch.cuda.empty_cache()
    for shape in AMAX_SHAPES:
        t = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
        us = _alternating_ms({name: (lambda _, q=q: q.tensor_amax(t)) for name, (_, q) in variants.items()})
        same = bool(torch.equal(*(q.tensor_amax(t) for _, q in variants.values())))
        results.append({"amax": shape, "us": us, "bit_identical": same})
        rows.append(["-", "amax kernel", "x".join(map(str, shape)), float("nan"), us["before"], us["after"],
                     us["before"] / us["after"], float("nan"), float("nan"), same])
    print_table("Triton backend before vs after, GPU time from CUDA graphs (us)",
                ["model", "op", "shape", "cuBLAS bf16 + epilogue", "before", "after", "after speed-up",
                 "x cuBLAS (before)", "x cuBLAS (after)", "bit-identical"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = ab_arguments(__doc__, WORKLOADS)
    parser.add_argument("--small-only", action="store_true", help="only the M = 1, 16 and 64 rows")
    parser.add_argument("--full-only", action="store_true", help="only the full-chunk rows")
    args = parse_ab_arguments(parser)
    run(args.before, args.json, args.models, args.small_only, args.full_only)
