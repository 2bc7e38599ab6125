"""A/B: decode-sized attention (16-64 queries) on the cp.async-ring Gluon kernel
(``attention_wgmma_ring``: page bytes copied into shared memory ``ring - 1`` pages ahead) against
the one-warpgroup Gluon kernel it derives from (``attention_wgmma``, one page ahead in registers,
what ``paged_attention`` routes 24-64 queries to) and flash SDPA over a bf16 cache, in one run, at
the LongLive cache shapes.

Why: if the decode kernels are bound by the bytes in flight per SM (RESULTS.md, twenty-fourth
session), pages in flight should pay. ``--rings 2`` is the control: one page ahead, as the
register version. Both kernels run at the same (default) split count, so their outputs should be
bit-identical (``max |ring - wgmma|`` = 0). Tq = 1 is in the default set although the single-query
CUDA-core kernel takes it now: at Tq = 1 the tensor-core kernel was within 10% of that kernel
(sixth session), so a ring that pays could take one query too.

    python benchmarks/ab_decode_ring.py [--models wan-1.3b wan-5b] [--tq 1 16 32 64] [--rings 2 3 4 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import SHAPES, Workload, against_wgmma, wgmma_baseline  # noqa: E402
from common import finish, print_table  # noqa: E402


def run(models, tqs, rings) -> list[dict]:
    from nvfp4_compiler.backends.triton.attention_wgmma_ring import paged_decode_ring

    rows = []
    for model in models:
        w = Workload(model)
        for tq in tqs:
            base = wgmma_baseline(w, tq)
            for ring in rings:
                def fn(i, ring=ring):
                    return paged_decode_ring(base["q"], *base["pages"], ring=ring)
                rows.append({"model": model, "tq": tq, "ring": ring, **against_wgmma(fn, base, "ring")})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tq", nargs="+", type=int, default=[1, 16, 32, 64])
    parser.add_argument("--rings", nargs="+", type=int, default=[2, 3, 4, 5])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ab_decode_ring.py needs a CUDA GPU (sm_90)")
    rows = run(args.models, args.tq, args.rings)
    print_table("decode attention: cp.async-ring Gluon kernel vs wgmma kernel vs flash SDPA (GPU ms, CUDA graphs)",
                ["model", "Tq", "ring", "SDPA ms", "wgmma ms", "ring ms", "x SDPA", "x wgmma", "wgmma x SDPA",
                 "rel err", "max |ring - wgmma|"],
                [[r["model"], r["tq"], r["ring"], r["sdpa_ms"], r["wgmma_ms"], r["ring_ms"], r["x_sdpa"], r["x_wgmma"],
                  r["wgmma_x_sdpa"], r["rel_err_vs_sdpa"], r["max_abs_vs_wgmma"]] for r in rows])
    finish(args.json, rows)


if __name__ == "__main__":
    main()
