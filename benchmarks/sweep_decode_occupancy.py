"""Sweep: is the single-query decode kernel (``attention_decode.py``) held back by how few programs
fit on an SM? Caps its registers per thread (ptxas ``maxnreg``) so that more programs are
resident, with the split count aimed at that many programs per SM, and times each configuration
in CUDA graphs beside flash SDPA over the bf16 cache and the default configuration, in one run.

    python benchmarks/sweep_decode_occupancy.py [--json out.json] [--models wan-1.3b wan-5b]

Rows: Tq = 1 over bench_attention.py's Wan-1.3B and Wan-5B sink + window caches. "resident" is
the programs per SM that the registers allow (65,536 per SM, allocated in steps of 8 per thread).
A cap below what the kernel wants makes ptxas spill to local memory: "spills" is Triton's
``n_spills``, the kernel's local memory in 4-byte words.
"""

from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from ab_gemm import _alternating_ms  # noqa: E402
from bench_attention import SHAPES, Workload, _rel_err  # noqa: E402
from common import arguments, finish, print_table  # noqa: E402

#: (BLOCK_N, warps, register cap or None, programs per SM that the split count aims for)
CONFIGS = ((32, 2, None, 4), (32, 2, 168, 6), (32, 2, 128, 8), (16, 2, None, 6), (16, 2, 128, 8),
           (32, 4, 128, 4), (16, 4, 96, 6), (16, 4, 128, 4), (64, 8, 128, 2))


class _RegisterCap:
    """Stands in for the JIT kernel in ``attention_decode`` so that its launches carry ``maxnreg``,
    and remembers the compiled kernel (registers, spills) of the last launch."""

    def __init__(self, kernel, maxnreg: int | None):
        self.kernel, self.maxnreg, self.compiled = kernel, maxnreg, None

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            if self.maxnreg:
                kwargs["maxnreg"] = self.maxnreg
            self.compiled = launch(*args, **kwargs)
            return self.compiled
        return run


@contextlib.contextmanager
def register_cap(module, maxnreg: int | None):
    """Launches of ``module.paged_decode_kernel`` inside the block carry ``maxnreg``."""
    original = module.paged_decode_kernel
    module.paged_decode_kernel = cap = _RegisterCap(original, maxnreg)
    try:
        yield cap
    finally:
        module.paged_decode_kernel = original


def resident_programs(registers: int, warps: int) -> int:
    """Programs per SM that ``registers`` per thread allow on Hopper (64 warps, 32 blocks per SM)."""
    per_program = -(-registers // 8) * 8 * 32 * warps
    return min(32, 64 // warps, 65536 // per_program)


def sweep_rows(model: str, configs=CONFIGS) -> list[dict]:
    from nvfp4_compiler.backends.triton import attention_decode as decode

    w = Workload(model)
    q, _ = w.inputs(1, False)
    c = w.cache
    pages = (c.k_data, c.k_scale, c.k_global, c.v_data, c.v_scale, c.v_global, w.table, w.fills, w.npages)
    default = lambda _: decode.paged_decode_attention(q, *pages)  # noqa: E731
    sdpa = w.routes(q, None)["sdpa_bf16"]
    ref = default(0).float()
    rows = []
    for block_n, warps, maxnreg, pps in configs:
        splits = decode.choose_decode_splits(w.heads, w.table.shape[1], q.device, pps)
        info = {}

        def capped(_, tile=(block_n, warps), maxnreg=maxnreg, splits=splits, info=info):
            with register_cap(decode, maxnreg) as cap:
                out = decode.paged_decode_attention(q, *pages, tile=tile, splits=splits)
            info.setdefault("registers", cap.compiled.n_regs)
            info.setdefault("spills", cap.compiled.n_spills)
            return out

        us = _alternating_ms({"sdpa_bf16": sdpa, "default": default, "config": capped})
        rows.append({"model": model, "tile": [block_n, warps], "maxnreg": maxnreg, "programs_per_sm": pps,
                     "splits": splits, **info, "resident": resident_programs(info["registers"], warps), "us": us,
                     "x_sdpa": us["sdpa_bf16"] / us["config"], "x_default": us["default"] / us["config"],
                     "rel_diff_vs_default": _rel_err(capped(0).float(), ref)})
    return rows


def run(json_path: str | None = None, models=tuple(SHAPES), configs=CONFIGS) -> dict:
    results = [r for model in models for r in sweep_rows(model, configs)]
    print_table("decode attention, Tq = 1: register caps and programs per SM, GPU time from CUDA graphs (us)",
                ["model", "tile", "maxnreg", "registers", "spills (words)", "resident/SM", "splits", "SDPA bf16",
                 "default", "config", "x SDPA", "x default", "diff vs default"],
                [[r["model"], tuple(r["tile"]), r["maxnreg"] or "-", r["registers"], r["spills"], r["resident"],
                  r["splits"], r["us"]["sdpa_bf16"], r["us"]["default"], r["us"]["config"], r["x_sdpa"],
                  r["x_default"], r["rel_diff_vs_default"]] for r in results])
    return finish(json_path, results)


if __name__ == "__main__":
    args = arguments(__doc__, SHAPES).parse_args()
    run(args.json, args.models)
