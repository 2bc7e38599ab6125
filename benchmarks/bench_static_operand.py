"""Benchmark: the FFN up GEMM writing the down GEMM's NVFP4 operand in its epilogue (static scales)
against writing bf16 and quantizing it in a second kernel, on the Wan FFN shapes, same run.

Per model and M (1, 16, 64 and the full chunk), GPU time from CUDA-graph replays:
    cublas_up        torch.matmul + bias + GELU-tanh in PyTorch (the bf16 route's up projection)
    unfused_up       Triton GEMM, GELU fused, bf16 out; then the static-scale quantize kernel
    fused_up         the same GEMM with the quantizing epilogue (gemm(..., next_amax=...))
    *_pair           up then down (down: bias, gate, residual), i.e. the whole FFN
The fused operand is compared byte for byte with quantizing the unfused output (the two kernels may
differ in accumulation order where they use different tiles, so a few codes may differ).

    python benchmarks/bench_static_operand.py [--models wan-1.3b wan-5b] [--json out.json]
        [--quant-tiles]   also time the full-chunk fused GEMM at the TMA configurations of QUANT_TILES
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import SMALL_M, WORKLOADS, bench_graph_ms, finish, print_table, rotations_for  # noqa: E402


def _ffn(model: str, m: int):
    """bf16 and NVFP4 weights of one FFN, rotating activations, and the static amax of the hidden."""
    import nvfp4_compiler as nvfp4

    dim, hidden, _, _ = WORKLOADS[model]
    dev, bf16 = "cuda", torch.bfloat16
    rot = rotations_for((dim * hidden * 2 + m * dim) * 2)
    w_up = [torch.randn(hidden, dim, device=dev, dtype=bf16) / dim**0.5 for _ in range(rot)]
    w_down = [torch.randn(dim, hidden, device=dev, dtype=bf16) / hidden**0.5 for _ in range(rot)]
    xs = [torch.randn(m, dim, device=dev, dtype=bf16) for _ in range(rot)]
    ffn = {
        "rot": rot, "xs": xs, "w_up": w_up, "w_down": w_down,
        "xq": [nvfp4.quantize(x) for x in xs], "wq_up": [nvfp4.quantize(w) for w in w_up],
        "wq_down": [nvfp4.quantize(w) for w in w_down],
        "b_up": torch.randn(hidden, device=dev, dtype=bf16), "b_down": torch.randn(dim, device=dev, dtype=bf16),
        "gate": torch.randn(1, dim, device=dev, dtype=bf16), "res": torch.randn(m, dim, device=dev, dtype=bf16),
    }
    ffn["next_amax"] = F.gelu(xs[0] @ w_up[0].T + ffn["b_up"], approximate="tanh").float().abs().amax()
    return ffn


def _variants(f) -> dict:
    from nvfp4_compiler.backends.triton.gemm import gemm
    from nvfp4_compiler.backends.triton.quantize import quantize

    bf16 = torch.bfloat16

    def up_bf16(i):
        return F.gelu(torch.matmul(f["xs"][i], f["w_up"][i].T) + f["b_up"], approximate="tanh")

    def down_bf16(i, h):
        return f["res"] + f["gate"] * (torch.matmul(h, f["w_down"][i].T) + f["b_down"])

    def up_nvfp4(i, **kw):
        a, w = f["xq"][i], f["wq_up"][i]
        return gemm(a.data, a.scale, a.global_scale, w.data, w.scale, w.global_scale, f["b_up"], "gelu_tanh",
                    None, None, bf16, **kw)

    def unfused_up(i):
        return quantize(up_nvfp4(i)[0], f["next_amax"])

    def fused_up(i):
        return up_nvfp4(i, next_amax=f["next_amax"])

    def down_nvfp4(i, operand):
        d, s, g = operand
        w = f["wq_down"][i]
        return gemm(d, s, g, w.data, w.scale, w.global_scale, f["b_down"], "none", f["gate"], f["res"], bf16)

    return {
        "cublas_up": up_bf16, "unfused_up": unfused_up, "fused_up": fused_up,
        "cublas_pair": lambda i: down_bf16(i, up_bf16(i)),
        "unfused_pair": lambda i: down_nvfp4(i, unfused_up(i)),
        "fused_pair": lambda i: down_nvfp4(i, fused_up(i)),
    }


def _mismatch(f, variants) -> dict:
    """Fraction of codes / scales of the fused operand that differ from quantizing the unfused output."""
    (d0, s0, g0), (d1, s1, g1) = variants["unfused_up"](0), variants["fused_up"](0)
    return {"bytes": float((d0 != d1).float().mean()),
            "scales": float((s0.view(torch.uint8) != s1.view(torch.uint8)).float().mean()),
            "s_dec_equal": bool(torch.equal(g0, g1))}


#: ((BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), programs per SM, registers per thread or None): the
#: TMA kernel's configurations tried for the quantizing epilogue. Two resident programs per SM could
#: let one run its (long) epilogue while the other multiplies; at 238 registers per thread (128 x 128,
#: 8 warps) only one fits, hence the register caps.
QUANT_TILES = [((128, 256, 64, 8, 3), 1, None), ((128, 128, 64, 8, 4), 1, None), ((128, 128, 64, 8, 3), 2, 128),
               ((128, 128, 64, 8, 2), 2, 128), ((64, 256, 64, 8, 3), 2, 128), ((128, 128, 64, 8, 3), 2, None)]


def _time_quant_tiles(fused_up, rotations: int) -> dict:
    """fused_up's time with each QUANT_TILES configuration of the full-chunk TMA kernel."""
    import functools

    from nvfp4_compiler.backends.triton import dense_gemm

    default, times = dense_gemm.dense_tma_gemm, {}
    for tile, per_sm, registers in QUANT_TILES:
        name = f"fused_up {tile} x{per_sm}/SM, {registers or 'any'} registers"
        dense_gemm.dense_tma_gemm = functools.partial(default, tile=tile, programs_per_sm=per_sm,
                                                      max_registers=registers)
        try:
            times[name] = bench_graph_ms(fused_up, rotations)
        except Exception as exc:  # e.g. out of shared memory: reported, not fatal
            times[name] = repr(exc)[:160]
        finally:
            dense_gemm.dense_tma_gemm = default
    return times


def _case(model: str, m: int, quant_tiles: bool) -> dict:
    f = _ffn(model, m)
    variants = _variants(f)
    result = {"model": model, "m": m, "mismatch": _mismatch(f, variants),
              "ms": {name: bench_graph_ms(fn, f["rot"]) for name, fn in variants.items()}}
    if quant_tiles and m >= 512:
        result["ms"].update(_time_quant_tiles(variants["fused_up"], f["rot"]))
    t = result["ms"]
    result["fused_vs_unfused_up"] = t["unfused_up"] / t["fused_up"]
    result["fused_vs_unfused_pair"] = t["unfused_pair"] / t["fused_pair"]
    result["cublas_vs_fused_pair"] = t["cublas_pair"] / t["fused_pair"]
    del f
    torch.cuda.empty_cache()
    return result


def run(json_path: str | None = None, models=tuple(WORKLOADS), quant_tiles: bool = False) -> dict:
    results, rows = [], []
    for model in models:
        for m in (*SMALL_M, WORKLOADS[model][2]):
            r = _case(model, m, quant_tiles)
            results.append(r)
            t = r["ms"]
            rows.append([model, m, t["cublas_up"] * 1e3, t["unfused_up"] * 1e3, t["fused_up"] * 1e3,
                         r["fused_vs_unfused_up"], t["cublas_pair"] * 1e3, t["unfused_pair"] * 1e3,
                         t["fused_pair"] * 1e3, r["fused_vs_unfused_pair"], r["cublas_vs_fused_pair"],
                         r["mismatch"]["bytes"]])
    print_table("FFN up writing the down GEMM's NVFP4 operand (us, CUDA graphs, median)",
                ["model", "M", "up cuBLAS", "up + quantize", "up fused", "x unfused", "FFN cuBLAS",
                 "FFN unfused", "FFN fused", "x unfused", "x cuBLAS", "codes differing"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--quant-tiles", action="store_true", help="time other TMA tiles for the fused epilogue")
    args = parser.parse_args()
    run(args.json, args.models, args.quant_tiles)
