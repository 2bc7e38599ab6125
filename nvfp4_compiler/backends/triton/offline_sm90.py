"""Build a Triton or Gluon kernel for sm_90 (Hopper) on a machine without a GPU, as launched.

For reading a kernel's PTX, registers and spills where no GPU is at hand (CPU tests, register
reports). Pointer arguments are declared 16-byte aligned, as Triton's launcher specializes them
for the tensors this package passes (whole allocations): without that the compiler cannot
vectorize loads, and a build shows byte loads and 10-20 more registers per thread than the kernel
has on the GPU (RESULTS.md, twenty-sixth session). Needs a process whose kernels were defined
without TRITON_INTERPRET=1.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource, GluonJITFunction

SM90 = GPUTarget("cuda", 90, 32)


def compile_sm90(fn, constexprs: dict, options: dict, types: dict | None = None, multiples_of_16=()):
    """``fn`` (a ``triton.jit`` or ``gluon.jit`` kernel) compiled for sm_90; ``types`` gives argument
    types (default: ``*u8`` for names ending in ``_ptr``, else ``i32``); the integer arguments named
    in ``multiples_of_16`` are specialized as the launcher does for values divisible by 16."""
    if not isinstance(fn, (triton.runtime.JITFunction, GluonJITFunction)):
        raise TypeError(f"fn: expected a triton.jit or gluon.jit kernel defined without TRITON_INTERPRET=1, "
                        f"got {type(fn).__name__}")
    types = types or {}
    signature = {n: "constexpr" if n in constexprs else types.get(n, "*u8" if n.endswith("_ptr") else "i32")
                 for n in fn.arg_names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
               if signature[n].startswith("*") or n in multiples_of_16}
    source = GluonASTSource if isinstance(fn, GluonJITFunction) else ASTSource
    return triton.compile(source(fn=fn, signature=signature, constexprs=constexprs, attrs=aligned), target=SM90,
                          options=options)


def resource_usage(compiled) -> str:
    """``cuobjdump -res-usage`` of a compiled kernel (registers, stack = spills, shared memory),
    with the cuobjdump Triton bundles."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        return subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
