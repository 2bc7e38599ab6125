"""Profile target for Nsight Compute: one NVFP4 quantization (amax given) per Wan shape of
bench_quantize, after autotuning, inside an NVTX range "profile".

    ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats python3 benchmarks/profile_quantize.py 4680x8960
"""

import sys

import torch

from nvfp4_compiler.backends.triton.quantize import quantize

for shape in sys.argv[1:] or ["4680x8960"]:
    m, k = (int(v) for v in shape.split("x"))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    amax = x.abs().amax().float()
    for _ in range(3):  # autotune and warm up outside the profiled range
        quantize(x, amax)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("profile")
    quantize(x, amax)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
