"""Where the GPU time of one NVFP4 training step of a Wan block goes: kernel table (torch.profiler).

    python benchmarks/profile_training.py [--model wan-1.3b] [--inductor 0|1]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))


def main(model: str, inductor: bool) -> None:
    from bench_training import _inputs
    from common import WORKLOADS

    import nvfp4_compiler as nvfp4
    from nvfp4_compiler.models import get_config
    from nvfp4_compiler.models.wan import DiTBlock

    cfg = get_config(model)
    torch.manual_seed(0)
    block = DiTBlock(cfg).cuda().to(torch.bfloat16).train()
    args = _inputs(cfg, WORKLOADS[model][2])
    trained = nvfp4.compile(block, inductor=inductor)

    def step():
        block.zero_grad(set_to_none=True)
        trained(*args).float().square().mean().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=60))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wan-1.3b")
    parser.add_argument("--inductor", type=int, default=1)
    options = parser.parse_args()
    main(options.model, bool(options.inductor))
