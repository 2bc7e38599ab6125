"""Compile a kernel for sm_90 in a fresh process (``nvfp4_compiler.backends.triton.offline_sm90``):
the test process runs Triton's CPU interpreter (TRITON_INTERPRET=1), whose kernels cannot be
compiled, so ``compile_for_sm90`` runs this file as a script without it.

    python tests/sm90_compile.py MODULE:KERNEL '{"D": 128}' '{"num_warps": 4}' '{"q_ptr": "*bf16"}' '["ROW_BYTES"]'

prints the PTX on stdout and cuobjdump's resource usage (registers, stack) on stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys


def compile_for_sm90(kernel: str, constexprs: dict, options: dict, types: dict | None = None,
                     multiples_of_16=()) -> tuple[str, str]:
    """(PTX, ``cuobjdump -res-usage`` report) of ``kernel`` ("module:name") compiled for sm_90, pointers
    16-byte aligned as launched; ``types`` and ``multiples_of_16`` as ``offline_sm90.compile_sm90``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, __file__, kernel, json.dumps(constexprs), json.dumps(options),
                           json.dumps(types or {}), json.dumps(list(multiples_of_16))], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


if __name__ == "__main__":
    from nvfp4_compiler.backends.triton.offline_sm90 import compile_sm90, resource_usage

    module, name = sys.argv[1].split(":")
    compiled = compile_sm90(getattr(importlib.import_module(module), name), *(json.loads(a) for a in sys.argv[2:6]))
    sys.stderr.write(resource_usage(compiled))
    sys.stdout.write(compiled.asm["ptx"])
