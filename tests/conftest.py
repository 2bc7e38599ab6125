import os
import sys

# Triton kernels run on CPU under the interpreter; set before triton is imported anywhere.
if not os.environ.get("NVFP4_TEST_ON_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))

import pytest
import torch

# Under pytest-xdist (`-n 2`, the README's test command) each worker is a process with torch's
# default of one thread per core: two workers on CI's two cores would run four threads and the
# torch-heavy tests (training) took 4x longer. Share the cores out instead.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // _workers))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles afresh: Dynamo's caches (and recompile limits) do not leak between tests."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
