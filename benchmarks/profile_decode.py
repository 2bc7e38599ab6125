"""Profile target for Nsight Compute: the paged NVFP4 attention kernel at decode-sized queries over
the Wan-1.3B sink + window cache (bench_attention's workload), one profiled call per Tq.
ROUTE picks the kernel: "in_register" (tensor cores, the default), "vector" (CUDA cores),
"wgmma" (the Gluon kernel, sm_90) or "ws" (its warp-specialized variant, AHEAD pages requested
ahead, default 1).

    ncu --nvtx --nvtx-include "profile/" --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats --section MemoryWorkloadAnalysis python3 benchmarks/profile_decode.py 1 64
    ROUTE=vector ncu ... python3 benchmarks/profile_decode.py 1
    ROUTE=ws AHEAD=3 ncu ... python3 benchmarks/profile_decode.py 64
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attention import Workload  # noqa: E402

w = Workload("wan-1.3b")
for tq in [int(a) for a in sys.argv[1:]] or [1]:
    q, _ = w.inputs(tq, False)
    route = os.environ.get("ROUTE", "in_register")
    if route == "ws":
        from nvfp4_compiler.backends.triton.attention_wgmma_ws import paged_decode_ws

        ahead = int(os.environ.get("AHEAD", 1))
        fn = lambda i, q=q, ahead=ahead: paged_decode_ws(q, *w.page_args, w.npages, ahead=ahead)  # noqa: E731
    else:
        fn = w.routes(q, None)[route]
    for _ in range(3):  # compile and warm up outside the profiled range
        fn(0)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("profile")
    fn(0)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
