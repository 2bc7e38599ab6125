"""Profile target for Nsight Compute: the W4A4 tile kernel at M=1 (ffn up of Wan-1.3B).

    ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats --section MemoryWorkloadAnalysis python3 benchmarks/profile_small_m.py
"""

import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler.backends.triton.gemm import gemm

m, k, n = 1, 1536, 8960
x = nvfp4.quantize(torch.randn(m, k, device="cuda", dtype=torch.bfloat16))
w = nvfp4.quantize(torch.randn(n, k, device="cuda", dtype=torch.bfloat16))
bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
args = (x.data, x.scale, x.global_scale, w.data, w.scale, w.global_scale, bias, "gelu_tanh", None, None, torch.bfloat16)
for _ in range(3):  # autotune and warm up outside the profiled range
    gemm(*args)
torch.cuda.synchronize()
torch.cuda.nvtx.range_push("profile")
gemm(*args)
torch.cuda.synchronize()
torch.cuda.nvtx.range_pop()
