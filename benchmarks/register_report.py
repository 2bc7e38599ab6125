"""Registers and spills of the W4A4 tile kernel for sm_90, measured on a machine without a GPU.

Triton compiles for GPUTarget("cuda", 90, 32) without a driver; ptxas -v (CUDA's, on PATH or in
/usr/local/cuda*/bin) reports registers and spills. Triton 3.9 emits PTX ISA 9.4, newer than
CUDA 13.0's ptxas accepts, so the version line is lowered to 9.0 (the kernel uses nothing newer).
Iterate on register pressure here, then confirm speed on the device.

    TRITON_INTERPRET=0 python benchmarks/register_report.py
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from nvfp4_compiler.backends.triton import gemm

#: Pointer arguments' element types; every other runtime argument is an i32.
POINTER_TYPES = {"a_ptr": "*u8", "as_ptr": "*u8", "w_ptr": "*u8", "ws_ptr": "*u8", "a_gs_ptr": "*fp32",
                 "w_gs_ptr": "*fp32", "bias_ptr": "*fp32", "gate_ptr": "*bf16", "res_ptr": "*bf16",
                 "out_ptr": "*bf16", "amax_ptr": "*fp32", "q_data_ptr": "*i32", "q_scale_ptr": "*u8",
                 "q_amax_ptr": "*fp32", "q_gs_ptr": "*fp32", "work_ptr": "*fp32"}


def _ptxas() -> str:
    found = shutil.which("ptxas") or next(iter(sorted(glob.glob("/usr/local/cuda*/bin/ptxas"))), None)
    if found is None:
        raise SystemExit("ptxas not found (install the CUDA toolkit)")
    return found


def report(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> str:
    consts = dict(ACT=2, HAS_BIAS=True, HAS_GATE=False, HAS_RES=False, WANT_AMAX=True, QUANT_OUT=False, SPLIT_K=4,
                  ONE_LAUNCH=True, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8)
    signature = {name: "constexpr" if name in consts else POINTER_TYPES.get(name, "i32")
                 for name in gemm.gemm_kernel.fn.arg_names}
    compiled = triton.compile(ASTSource(fn=gemm.gemm_kernel.fn, signature=signature, constexprs=consts),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"].replace(".version 9.4", ".version 9.0"))
        out = subprocess.run([_ptxas(), "-arch=sm_90a", "-v", ptx, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True)
    lines = [ln.split("info    : ")[-1] for ln in out.stderr.splitlines() if "registers" in ln or "spill" in ln]
    return " | ".join(lines) or out.stderr.strip()


if __name__ == "__main__":
    for shape in [(16, 32, 64, 4, 3), (16, 64, 64, 4, 3), (16, 32, 128, 4, 3), (16, 64, 128, 4, 3),
                  (16, 128, 256, 4, 3)]:
        print(shape, report(*shape))
