"""Where the time of one NVFP4 block forward goes: host vs wall time per call, the Python
functions that take the host time (cProfile), torch.profiler tables (CPU and CUDA), a trace.

    python benchmarks/profile_block.py [--model wan-1.3b] [--inductor 0|1] [--trace out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))


def main(model: str, inductor: bool, trace: str | None) -> None:
    from bench_block import block_and_inputs

    import nvfp4_compiler as nvfp4

    block, args = block_and_inputs(model)
    quantized = nvfp4.compile(block, backend="triton", inductor=inductor)
    with torch.no_grad():
        for _ in range(5):
            quantized(*args)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            quantized(*args)
        host = (time.perf_counter() - start) / 20
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / 20
        print(f"{model} inductor={inductor}: host {host * 1e3:.2f} ms per call, wall {wall * 1e3:.2f} ms per call")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                quantized(*args)
            torch.cuda.synchronize()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20):
            quantized(*args)
        profiler.disable()
        torch.cuda.synchronize()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70))
    print(averages.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70))
    if trace:
        prof.export_chrome_trace(trace)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wan-1.3b")
    parser.add_argument("--inductor", type=int, default=1)
    parser.add_argument("--trace", default=None)
    options = parser.parse_args()
    main(options.model, bool(options.inductor), options.trace)
