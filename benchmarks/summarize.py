"""Turn benchmark JSON (benchmarks/runs/*.json) into the markdown tables of RESULTS.md.

    python benchmarks/summarize.py benchmarks/runs/v2_gemm.json benchmarks/runs/v2_quantize.json ...
"""

from __future__ import annotations

import json
import sys


def _env(env: dict) -> str:
    return (f"{env['device']} ({env['sms']} SMs), torch {env['torch']}, Triton {env['triton']}, CUDA {env['cuda']}, "
            f"{env['date']}, `{env['command']}`")


def gemm_table(d: dict) -> str:
    lines = [_env(d["environment"]), "",
             "| model | GEMM | M x K x N | cuBLAS bf16 + epilogue (us) | dequant + matmul (us) | NVFP4 fused (us) "
             "| quantize + NVFP4 (us) | x cuBLAS | cuBLAS graph (us) | NVFP4 graph (us) | x cuBLAS (graphs) | rel err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        t = r["ms"]
        g = lambda k: f"{t[k] * 1e3:.1f}" if k in t else "-"  # noqa: E731
        sg = r.get("speedup_vs_cublas_graph")
        lines.append(f"| {r['model']} | {r['gemm']} | {r['m']}x{r['k']}x{r['n']} | {g('cublas_bf16')} | "
                     f"{g('dequant_matmul')} | {g('nvfp4_gemm')} | {g('nvfp4_q+gemm')} | "
                     f"{r['speedup_vs_cublas']:.2f} | {g('cublas_bf16_graph')} | {g('nvfp4_gemm_graph')} | "
                     f"{'-' if sg is None else f'{sg:.2f}'} | {r['rel_err_vs_reference']:.1e} |")
    return "\n".join(lines)


def quantize_table(d: dict) -> str:
    lines = [_env(d["environment"]) + f"; copy bandwidth {d['copy_gbs']:.0f} GB/s (read + write)", "",
             "| model | M x K | amax given (us) | GB/s | x copy | amax given, CUDA graph (us) | x copy (graph) "
             "| amax reduced (us) | GB/s | x copy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        graph_us = f"{r['ms_amax_given_graph'] * 1e3:.1f}" if "ms_amax_given_graph" in r else "-"
        graph_x = f"{r['ratio_to_copy_given_graph']:.2f}" if "ratio_to_copy_given_graph" in r else "-"
        lines.append(f"| {r['model']} | {r['shape'][0]}x{r['shape'][1]} | {r['ms_amax_given'] * 1e3:.1f} | "
                     f"{r['gbs_amax_given']:.0f} | {r['ratio_to_copy_given']:.2f} | {graph_us} | {graph_x} | "
                     f"{r['ms_amax_dynamic'] * 1e3:.1f} | {r['gbs_amax_dynamic']:.0f} | {r['ratio_to_copy_dynamic']:.2f} |")
    return "\n".join(lines)


def block_table(d: dict) -> str:
    r = d["results"][0]
    t = r["ms"]
    return "\n".join([_env(d["environment"]), "",
                      "| model | tokens | eager bf16 (ms) | torch.compile bf16 (ms) | NVFP4 (ms) | x compiled bf16 | weights bf16 / NVFP4 | rel err vs bf16 |",
                      "|---|---|---|---|---|---|---|---|",
                      f"| {r['model']} | {r['tokens']} | {t['eager_bf16']:.2f} | {t['compiled_bf16']:.2f} | {t['nvfp4']:.2f} | "
                      f"{r['speedup_vs_compiled_bf16']:.2f} | {r['weight_ratio']:.2f} | {r['rel_err_vs_bf16']:.4f} |"])


def attention_table(d: dict) -> str:
    """bench_attention.py's rows (not its --sweep output): GPU ms per route and ratios to SDPA."""
    routes = ("in_register", "vector", "wgmma", "scratch")
    lines = [_env(d["environment"]), "",
             "| model | kind | Tq | SDPA bf16 (ms) | " + " | ".join(f"{r} (ms)" for r in routes) +
             " | auto | x SDPA (auto) | x dequant + SDPA (wall) | cache bf16 / NVFP4 |",
             "|---|---|---|---|" + "---|" * len(routes) + "---|---|---|---|"]
    for r in d["results"]:
        g = r["gpu_ms"]
        cell = lambda k: f"{g[k]:.4f}" if k in g else "-"  # noqa: E731
        auto = r["auto_strategy"]
        lines.append(f"| {r['model']} | {r['kind']} | {r['tq']} | {g['sdpa_bf16']:.4f} | "
                     + " | ".join(cell(f"nvfp4_{k}") for k in routes)
                     + f" | {auto} | {r['speedup_vs_sdpa_bf16'][auto]:.2f} | {r['speedup_vs_dequant_sdpa']:.1f} | "
                     f"{r['memory_ratio']:.2f} |")
    return "\n".join(lines)


def _kind(path: str) -> str:
    for kind in ("gemm", "quantize", "attention"):
        if kind in path:
            return kind
    return "block"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        data = json.load(open(path))
        tables = {"gemm": gemm_table, "quantize": quantize_table, "attention": attention_table, "block": block_table}
        print(f"#### `{path}`\n")
        print(tables[_kind(path)](data))
        print()
