import os
import sys

# Triton kernels run on CPU under the interpreter; set before triton is imported anywhere.
if not os.environ.get("NVFP4_TEST_ON_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))
