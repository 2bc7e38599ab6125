"""Registers and spills of the W4A4 tile kernel for sm_90, measured on a machine without a GPU.

Triton compiles for sm_90 without a driver (``offline_sm90``: pointers 16-byte aligned, as
launched), and the cuobjdump it bundles reports registers and stack (spills). Iterate on register
pressure here, then confirm speed on the device.

    TRITON_INTERPRET=0 python benchmarks/register_report.py
"""

from __future__ import annotations

import re

from nvfp4_compiler.backends.triton import gemm
from nvfp4_compiler.backends.triton.offline_sm90 import compile_sm90, resource_usage

#: Pointer arguments' element types; every other runtime argument is an i32.
POINTER_TYPES = {"a_ptr": "*u8", "as_ptr": "*u8", "w_ptr": "*u8", "ws_ptr": "*u8", "a_gs_ptr": "*fp32",
                 "w_gs_ptr": "*fp32", "bias_ptr": "*fp32", "gate_ptr": "*bf16", "res_ptr": "*bf16",
                 "out_ptr": "*bf16", "amax_ptr": "*fp32", "q_data_ptr": "*i32", "q_scale_ptr": "*u8",
                 "q_amax_ptr": "*fp32", "q_gs_ptr": "*fp32", "work_ptr": "*fp32"}


def report(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> str:
    consts = dict(ACT=2, HAS_BIAS=True, HAS_GATE=False, HAS_RES=False, WANT_AMAX=True, QUANT_OUT=False, SPLIT_K=4,
                  ONE_LAUNCH=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8)
    compiled = compile_sm90(gemm.gemm_kernel.fn, consts, {"num_warps": warps, "num_stages": stages}, POINTER_TYPES)
    return " ".join(re.findall(r"REG:\d+ STACK:\d+ SHARED:\d+", resource_usage(compiled)))


if __name__ == "__main__":
    for shape in [(16, 32, 64, 4, 3), (16, 64, 64, 4, 3), (16, 32, 128, 4, 3), (16, 64, 128, 4, 3),
                  (16, 128, 256, 4, 3)]:
        print(shape, report(*shape))
