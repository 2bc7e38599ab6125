"""Shared benchmark helpers: shapes from DESIGN.md, timing, environment, table + JSON output."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from dataclasses import dataclass

import torch

# (model, dim, ffn, chunk tokens, text tokens) of DESIGN.md's reference workloads.
WORKLOADS = {"wan-1.3b": (1536, 8960, 4680, 512), "wan-5b": (3072, 14336, 7040, 512)}
SMALL_M = (1, 16, 64)


def block_gemms(model: str) -> list[tuple[str, int, int, str]]:
    """(name, K, N, epilogue) of every distinct GEMM of one block; q/k/v/o and cross-attn share shapes."""
    dim, ffn, _, _ = WORKLOADS[model]
    return [
        ("attn qkv/o", dim, dim, "bias"),
        ("ffn up", dim, ffn, "bias+gelu_tanh"),
        ("ffn down", ffn, dim, "bias+gate+residual"),
    ]


def epilogue_operands(m: int, n: int, kind: str, device: str = "cuda"):
    """(bias, gate, residual, activation) of a block GEMM's epilogue ``kind`` (block_gemms) for an
    [m, n] output: bf16 bias always; a broadcast gate and a residual for "gate"; GELU-tanh for
    "gelu"."""
    bf16 = torch.bfloat16
    bias = torch.randn(n, device=device, dtype=bf16)
    gate = torch.randn(1, n, device=device, dtype=bf16) if "gate" in kind else None
    res = torch.randn(m, n, device=device, dtype=bf16) if "gate" in kind else None
    return bias, gate, res, "gelu_tanh" if "gelu" in kind else "none"


@dataclass
class GemmCase:
    """One block GEMM's inputs: bf16 ``x`` [m, k] and ``w`` [n, k], their NVFP4 quantizations, and
    the epilogue's operands (``epilogue_operands`` of ``kind``)."""
    x: torch.Tensor
    w: torch.Tensor
    xq: object
    wq: object
    bias: torch.Tensor
    gate: torch.Tensor | None
    res: torch.Tensor | None
    act: str

    @property
    def args(self) -> tuple:
        """The arguments of the Triton backend's ``gemm(*args)`` (bf16 output)."""
        xq, wq = self.xq, self.wq
        return (xq.data, xq.scale, xq.global_scale, wq.data, wq.scale, wq.global_scale, self.bias, self.act,
                self.gate, self.res, torch.bfloat16)


def gemm_case(m: int, k: int, n: int, kind: str, device: str = "cuda") -> GemmCase:
    """Random operands of an [m, k] x [n, k]^T block GEMM (w scaled by 1/sqrt(k)) with epilogue ``kind``."""
    import nvfp4_compiler as nvfp4

    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) / k**0.5
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    return GemmCase(x, w, nvfp4.quantize(x), nvfp4.quantize(w), *epilogue_operands(m, n, kind, device))


def bench_ms(fn, rotations: int = 1, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median ms of ``fn(i)`` over rotating input sets i (keeps memory-bound cases out of L2)."""
    import triton

    state = {"i": 0}

    def step():
        fn(state["i"] % rotations)
        state["i"] += 1

    return float(triton.testing.do_bench(step, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def bench_graph_ms(fn, rotations: int = 1, replays: int = 20) -> float:
    """Median ms per call of ``fn(i)`` replayed from a CUDA graph holding one call per rotation:
    GPU time without Python launch overhead (how a serving loop with CUDA graphs runs)."""
    import triton

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(rotations):  # warm up (autotuning, allocations) outside the capture
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(replays):
            for i in range(rotations):
                fn(i)
    ms = triton.testing.do_bench(graph.replay, warmup=25, rep=100, return_mode="median")
    return float(ms) / (replays * rotations)


def gpu_kernel_ms(fn, calls: int = 3) -> float:
    """Milliseconds of GPU kernel time per call of ``fn`` (torch.profiler, summed over kernels): the
    time a call costs once host launch overhead is hidden (CUDA graphs, or a faster host)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels) / 1e3 / calls


def rotations_for(bytes_per_set: int, target_bytes: int = 256 * 2**20, cap: int = 32) -> int:
    """How many copies of the inputs to cycle through so they cannot stay in L2 (50 MB on H100)."""
    return max(1, min(cap, -(-target_bytes // max(bytes_per_set, 1))))


def environment() -> dict:
    import triton

    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
    }


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth, bytes read + written, on a 1 GiB buffer."""
    src = torch.empty(2**29, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda i: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / ms / 1e6


def arguments(doc: str, models=None) -> argparse.ArgumentParser:
    """The command line the benchmark scripts share: --json, and --models choosing among ``models``
    (all by default) when given."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", default=None)
    if models is not None:
        parser.add_argument("--models", nargs="+", default=list(models), choices=list(models))
    return parser


def finish(path: str | None, results: list) -> dict:
    """The run's payload (environment + results), written to ``path`` when given."""
    payload = {"environment": environment(), "results": results}
    write_json(path, payload)
    return payload


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row])
    Console(width=200).print(table)
