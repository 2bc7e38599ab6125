"""Benchmark: one Wan-1.3B (or 5B) DiT block training step (forward + backward) at a full chunk.

    compiled_bf16   torch.compile(block), bf16 weights and activations: the issue's baseline
    nvfp4_captured  nvfp4.compile(block, inductor=False) in train mode: fprop, dgrad and wgrad GEMMs
                    in NVFP4 with the recipe (Triton quantize with RHT/SR, W4A4 GEMMs); the other
                    ops run as captured, under eager autograd
    nvfp4           nvfp4.compile(block) in train mode: the same GEMMs, the graph handed to
                    AOTAutograd + Inductor (other ops fused, saved set chosen by the partitioner)
    *_graphs        the same replayed as CUDA graphs (torch.compile(mode="reduce-overhead") for
                    bf16, nvfp4.compile(..., cuda_graphs=True)); ratios against each other

Also the GPU kernel time per step (profiler sum: what a step costs with launch overhead hidden;
the H100 host lent here spends 0.1-0.5 ms of Python per NVFP4 op), and the activation memory
held for backward: CUDA memory allocated after the forward, minus before, with the output's own
bytes removed (both arms measured the same way).

    python benchmarks/bench_training.py [--model wan-1.3b] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import WORKLOADS, bench_ms, finish, gpu_kernel_ms, print_table  # noqa: E402


def _inputs(cfg, tokens):
    from nvfp4_compiler.models.wan import rope_3d_angles

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, tokens, cfg.dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    time_mod = torch.randn(1, 6, cfg.dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.1
    text = torch.randn(1, cfg.text_tokens, cfg.dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    frames = torch.arange(cfg.chunk_frames, device="cuda")
    angles = rope_3d_angles(frames, cfg.latent_height // 2, cfg.latent_width // 2, cfg.head_dim)
    return x.requires_grad_(), time_mod, text, angles


def _saved_bytes(fn, args) -> int:
    """Bytes the autograd graph keeps alive between forward and backward."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = fn(*args)
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before - out.numel() * out.element_size()
    out.float().square().mean().backward()
    return held


def run(json_path: str | None = None, model: str = "wan-1.3b") -> dict:
    import nvfp4_compiler as nvfp4
    from nvfp4_compiler.models import get_config
    from nvfp4_compiler.models.wan import DiTBlock

    cfg = get_config(model)
    tokens = WORKLOADS[model][2]
    torch.manual_seed(0)
    block = DiTBlock(cfg).cuda().to(torch.bfloat16).train()
    args = _inputs(cfg, tokens)
    arms = {"compiled_bf16": torch.compile(block),
            "nvfp4_captured": nvfp4.compile(block, recipe="nvfp4", inductor=False),
            "nvfp4": nvfp4.compile(block, recipe="nvfp4", inductor=True),
            # Replayed as CUDA graphs: step time without the host's launch cost. Their memory and
            # kernel time are not measured (graph pools are allocated once; kernels run inside graphs).
            "compiled_bf16_graphs": torch.compile(block, mode="reduce-overhead"),
            "nvfp4_graphs": nvfp4.compile(block, recipe="nvfp4", cuda_graphs=True)}

    def step(fn):
        block.zero_grad(set_to_none=True)
        fn(*args).float().square().mean().backward()

    times, gpu_times, saved = {}, {}, {}
    for name, fn in arms.items():
        for _ in range(3):  # capture, compile, autotune (and record the CUDA graphs)
            step(fn)
        if not name.endswith("_graphs"):
            saved[name] = _saved_bytes(fn, args)
            gpu_times[name] = gpu_kernel_ms(lambda fn=fn: step(fn))
        times[name] = bench_ms(lambda i, fn=fn: step(fn), warmup_ms=100, rep_ms=500)
    result = {"model": model, "tokens": tokens, "step_ms": times, "step_gpu_kernel_ms": gpu_times,
              "saved_activation_bytes": saved,
              "step_time_ratio_nvfp4_over_bf16": times["nvfp4"] / times["compiled_bf16"],
              "graphs_step_time_ratio": times["nvfp4_graphs"] / times["compiled_bf16_graphs"],
              "saved_activation_ratio_nvfp4_over_bf16": saved["nvfp4"] / saved["compiled_bf16"],
              "captured_step_time_ratio": times["nvfp4_captured"] / times["compiled_bf16"],
              "captured_saved_activation_ratio": saved["nvfp4_captured"] / saved["compiled_bf16"],
              "inductor": arms["nvfp4"].report().inductor + arms["nvfp4_graphs"].report().inductor,
              "quantized_linears": len(arms["nvfp4"].report().quantized)}

    def ratio(table, name):
        base = "compiled_bf16_graphs" if name.endswith("_graphs") else "compiled_bf16"
        return table[name] / table[base] if name in table else "-"

    print_table(f"{model} block training step (forward + backward), {tokens} tokens",
                ["arm", "step ms", "time ratio (target <= 1.15)", "GPU kernel ms", "GPU ratio", "saved MiB",
                 "memory ratio (target <= 0.6)"],
                [[name, times[name], ratio(times, name), gpu_times.get(name, "-"), ratio(gpu_times, name),
                  saved[name] / 2**20 if name in saved else "-", ratio(saved, name)] for name in arms])
    return finish(json_path, [result])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--model", default="wan-1.3b", choices=list(WORKLOADS))
    args = parser.parse_args()
    run(args.json, args.model)
