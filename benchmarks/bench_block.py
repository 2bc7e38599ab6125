"""Benchmark: one Wan-1.3B (or 5B) DiT block forward at a full chunk, bf16 vs NVFP4, same run.

    eager_bf16       the block as written, bf16
    compiled_bf16    torch.compile(block) (Inductor), bf16: the baseline the issue names
    nvfp4_captured   nvfp4.compile(block, inductor=False) on the Triton backend: the non-GEMM ops
                     run as captured, one eager kernel each
    nvfp4            nvfp4.compile(block) on the Triton backend, the rewritten graph handed to
                     Inductor (non-GEMM ops fused, NVFP4 ops as extern kernels)
    *_graphs         the same replayed as CUDA graphs: torch.compile(mode="reduce-overhead") for
                     bf16, nvfp4.compile(..., cuda_graphs=True) for NVFP4
    nvfp4_static_graphs  nvfp4_graphs with static activation scales (calibrated on the inputs): the
                     FFN up GEMM writes the down GEMM's NVFP4 operand in its epilogue

    python benchmarks/bench_block.py [--model wan-1.3b] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import WORKLOADS, bench_ms, finish, print_table  # noqa: E402


def block_and_inputs(model: str) -> tuple[torch.nn.Module, tuple]:
    """One bf16 ``DiTBlock`` of ``model`` on the GPU and its inputs at a full chunk."""
    from nvfp4_compiler.models import get_config
    from nvfp4_compiler.models.wan import DiTBlock, rope_3d_angles

    cfg = get_config(model)
    torch.manual_seed(0)
    block = DiTBlock(cfg).cuda().to(torch.bfloat16).eval()
    tokens = WORKLOADS[model][2]
    x = torch.randn(1, tokens, cfg.dim, device="cuda", dtype=torch.bfloat16)
    time_mod = torch.randn(1, 6, cfg.dim, device="cuda", dtype=torch.bfloat16) * 0.1
    text = torch.randn(1, cfg.text_tokens, cfg.dim, device="cuda", dtype=torch.bfloat16)
    frames = torch.arange(cfg.chunk_frames, device="cuda")
    angles = rope_3d_angles(frames, cfg.latent_height // 2, cfg.latent_width // 2, cfg.head_dim)
    return block, (x, time_mod, text, angles)


def run(json_path: str | None = None, model: str = "wan-1.3b") -> dict:
    import nvfp4_compiler as nvfp4

    block, args = block_and_inputs(model)
    tokens = args[0].shape[1]
    variants = {  # name -> callable; each compiled once, checked, then timed in the same run
        "eager_bf16": block,
        "compiled_bf16": torch.compile(block),
        "compiled_bf16_graphs": torch.compile(block, mode="reduce-overhead"),
        "nvfp4_captured": nvfp4.compile(block, backend="triton", inductor=False),
        "nvfp4": nvfp4.compile(block, backend="triton", inductor=True),
        "nvfp4_graphs": nvfp4.compile(block, backend="triton", inductor=True, cuda_graphs=True),
        "nvfp4_static_graphs": nvfp4.compile(block, backend="triton", inductor=True, cuda_graphs=True,
                                             activation_scales="static"),
    }
    with torch.no_grad():
        nvfp4.calibrate(variants["nvfp4_static_graphs"], [args], progress=False)
        ref = block(*args).float()
        rel = {}
        for name, fn in variants.items():
            for _ in range(3):  # CUDA-graph variants record on a later call than the first
                out = fn(*args).float()
            rel[name] = float((out - ref).norm() / ref.norm())
        times = {name: bench_ms(lambda i, fn=fn: fn(*args)) for name, fn in variants.items()}
    report = variants["nvfp4"].report()
    before, after = report.weight_bytes()
    result = {"model": model, "tokens": tokens, "ms": times, "rel_err_vs_bf16": rel,
              "inductor": report.inductor + variants["nvfp4_graphs"].report().inductor,
              "speedup_vs_compiled_bf16": times["compiled_bf16"] / times["nvfp4"],
              "graphs_speedup_vs_compiled_bf16_graphs": times["compiled_bf16_graphs"] / times["nvfp4_graphs"],
              "static_graphs_speedup_vs_compiled_bf16_graphs":
                  times["compiled_bf16_graphs"] / times["nvfp4_static_graphs"],
              "captured_speedup_vs_compiled_bf16": times["compiled_bf16"] / times["nvfp4_captured"],
              "weight_bytes_bf16": before, "weight_bytes_nvfp4": after, "weight_ratio": before / after}
    print_table(f"{model} block forward, {tokens} tokens (ms, median)",
                ["eager bf16", "compile bf16", "compile bf16 + CUDA graphs", "NVFP4 as captured",
                 "NVFP4 + Inductor", "NVFP4 + Inductor + CUDA graphs", "the same, static scales",
                 "x compile bf16 (without / with graphs / static)", "weights bf16/NVFP4", "rel err NVFP4 (static)"],
                [[times["eager_bf16"], times["compiled_bf16"], times["compiled_bf16_graphs"], times["nvfp4_captured"],
                  times["nvfp4"], times["nvfp4_graphs"], times["nvfp4_static_graphs"],
                  f"{result['speedup_vs_compiled_bf16']:.3f} / {result['graphs_speedup_vs_compiled_bf16_graphs']:.3f}"
                  f" / {result['static_graphs_speedup_vs_compiled_bf16_graphs']:.3f}",
                  result["weight_ratio"], f"{rel['nvfp4']:.4f} ({rel['nvfp4_static_graphs']:.4f})"]])
    return finish(json_path, [result])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--model", default="wan-1.3b", choices=list(WORKLOADS))
    args = parser.parse_args()
    run(args.json, args.model)
