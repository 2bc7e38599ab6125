import os
import sys

# Triton kernels run on CPU under the interpreter; set before triton is imported anywhere.
if not os.environ.get("NVFP4_TEST_ON_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles afresh: Dynamo's caches (and recompile limits) do not leak between tests."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
