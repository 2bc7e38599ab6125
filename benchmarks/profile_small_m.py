"""Profile target for Nsight Compute: one W4A4 GEMM call of the Triton backend at a small M (by
default the ffn up GEMM of Wan-1.3B at M = 1), autotuned and warmed up outside the profiled range.

    ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats --section MemoryWorkloadAnalysis \\
        python3 benchmarks/profile_small_m.py [--m 64 --k 3072 --n 14336]
"""

import argparse

import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler.backends.triton.gemm import gemm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=1, help="activation rows")
    parser.add_argument("--k", type=int, default=1536, help="reduction length (a multiple of 16)")
    parser.add_argument("--n", type=int, default=8960, help="output features")
    args = parser.parse_args()
    x = nvfp4.quantize(torch.randn(args.m, args.k, device="cuda", dtype=torch.bfloat16))
    w = nvfp4.quantize(torch.randn(args.n, args.k, device="cuda", dtype=torch.bfloat16))
    bias = torch.randn(args.n, device="cuda", dtype=torch.bfloat16)
    operands = (x.data, x.scale, x.global_scale, w.data, w.scale, w.global_scale, bias, "gelu_tanh", None, None,
                torch.bfloat16)
    for _ in range(3):  # autotune and warm up outside the profiled range
        gemm(*operands)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("profile")
    gemm(*operands)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()


if __name__ == "__main__":
    main()
