"""Benchmark: one Wan-1.3B (or 5B) DiT block forward at a full chunk, bf16 vs NVFP4, same run.

    eager_bf16       the block as written, bf16
    compiled_bf16    torch.compile(block) (Inductor), bf16: the baseline the issue names
    nvfp4            nvfp4.compile(block) on the Triton backend (non-GEMM ops run as captured, eager)

    python benchmarks/bench_block.py [--model wan-1.3b] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import WORKLOADS, bench_ms, finish, print_table  # noqa: E402


def run(json_path: str | None = None, model: str = "wan-1.3b") -> dict:
    import nvfp4_compiler as nvfp4
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
    args = (x, time_mod, text, angles)

    compiled_bf16 = torch.compile(block)
    quantized = nvfp4.compile(block, backend="triton")
    with torch.no_grad():
        ref = block(*args)
        out = quantized(*args)
        compiled_bf16(*args)
        rel = float((out.float() - ref.float()).norm() / ref.float().norm())
        times = {
            "eager_bf16": bench_ms(lambda i: block(*args)),
            "compiled_bf16": bench_ms(lambda i: compiled_bf16(*args)),
            "nvfp4": bench_ms(lambda i: quantized(*args)),
        }
    before, after = quantized.report().weight_bytes()
    result = {"model": model, "tokens": tokens, "ms": times, "rel_err_vs_bf16": rel,
              "speedup_vs_compiled_bf16": times["compiled_bf16"] / times["nvfp4"],
              "weight_bytes_bf16": before, "weight_bytes_nvfp4": after, "weight_ratio": before / after}
    print_table(f"{model} block forward, {tokens} tokens (ms, median)",
                ["eager bf16", "torch.compile bf16", "NVFP4", "x compiled bf16", "weights bf16/NVFP4", "rel err"],
                [[times["eager_bf16"], times["compiled_bf16"], times["nvfp4"], result["speedup_vs_compiled_bf16"],
                  result["weight_ratio"], rel]])
    return finish(json_path, [result])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--model", default="wan-1.3b", choices=list(WORKLOADS))
    args = parser.parse_args()
    run(args.json, args.model)
