"""Benchmark: attention over a LongLive KV cache (frame sink + rolling window), NVFP4 pages vs bf16.

For each model of DESIGN.md (Wan-1.3B: chunk 4680 tokens, cache 4680 sink + 18720 window, 12x128
heads; Wan-5B: chunk 7040, cache 7040 + 28160, 24x128), in one run:

    sdpa_bf16         PyTorch's flash SDPA over a bf16 cache holding the same tokens (the baseline)
    dequant_sdpa      dequantize the whole NVFP4 cache to bf16 (PyTorch ops), then flash SDPA:
                      what LongLive-2.0 does before every attention call
    nvfp4_paged       the Triton kernel reading the NVFP4 pages in place (page tables prepared once,
                      as a serving loop keeps them)

Rows: "chunk" = a denoising forward (queries = the chunk, keys = cache + the chunk's own K/V) and
"decode" = Tq in (1, 16, 64) over the cache alone. Times: GPU time from CUDA-graph replays for SDPA
and the kernel (the target ratios), and wall time per call (do_bench) for all three (the PyTorch
dequantize route cannot be graph-captured: it builds a lookup table per call). Memory: the
cache's bytes, NVFP4 vs bf16.

    python benchmarks/bench_attention.py [--models wan-1.3b wan-5b] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(__file__))
from common import bench_graph_ms, bench_ms, finish, print_table  # noqa: E402

# model: (heads, head_dim, chunk tokens, sink tokens, window tokens)
SHAPES = {"wan-1.3b": (12, 128, 4680, 4680, 18720), "wan-5b": (24, 128, 7040, 7040, 28160)}
PAGE = 64
DECODE_TQ = (1, 16, 64)


def _fill_cache(heads, dim, chunk, sink, window):
    from nvfp4_compiler.kv_cache import PagedNVFP4Cache

    chunks = [sink] + [chunk] * (window // chunk)
    pages = sum(-(-n // PAGE) for n in chunks)  # each append starts a fresh page
    cache = PagedNVFP4Cache(pages, PAGE, heads, dim, window_tokens=window, device="cuda")
    cache.add_sequence(0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for i, n in enumerate(chunks):
        k, v = (torch.randn(n, heads, dim, device="cuda", generator=gen) for _ in range(2))
        cache.append(0, k, v, sink=i == 0)
    return cache


def _slot_index(fills, npages):
    """Flat slot of each stored token in [pages x PAGE] order (pages may be partly filled)."""
    f = fills[0, : int(npages[0])].long()
    slots = torch.arange(PAGE, device=f.device)[None, :] + PAGE * torch.arange(len(f), device=f.device)[:, None]
    return slots[slots % PAGE < f[:, None]]


def _dequantize_all(cache, pages, slots):
    """The whole cache as bf16 [1, H, T, D] K and V, vectorized PyTorch ops."""
    k, v = (cache.dequantize_pages(pages, w).flatten(0, 1)[slots] for w in ("k", "v"))
    return (t.to(torch.bfloat16).transpose(0, 1)[None] for t in (k, v))


def _row(label, r):
    g, w = r["gpu_ms"], r["wall_ms"]
    return [label, r["tq"], g["sdpa_bf16"], g["nvfp4_paged"], r["speedup_vs_sdpa_bf16"],
            w["sdpa_bf16"], w["dequant_sdpa"], w["nvfp4_paged"], r["speedup_vs_dequant_sdpa"],
            r["memory_ratio"], r["rel_err_vs_sdpa"]]


def run_model(model: str) -> list[dict]:
    from nvfp4_compiler.backends.triton.attention import paged_attention as kernel

    heads, dim, chunk, sink, window = SHAPES[model]
    cache = _fill_cache(heads, dim, chunk, sink, window)
    tokens = cache.length(0)
    table, fills, npages = cache.page_tables([0])
    pages = table[0, : int(npages[0])].long()
    slots = _slot_index(fills, npages)
    k_bf16, v_bf16 = _dequantize_all(cache, pages, slots)   # the bf16 cache holding the same tokens
    bf16_bytes = 2 * k_bf16.numel() * k_bf16.element_size()
    gen = torch.Generator(device="cuda").manual_seed(1)
    results = []
    for kind, tq in [("chunk", chunk)] + [("decode", t) for t in DECODE_TQ]:
        q = torch.randn(1, tq, heads, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
        new = None
        if kind == "chunk":
            new = [torch.randn(1, chunk, heads, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
                   for _ in range(2)]
        q_t = q.transpose(1, 2)
        kv_all = (k_bf16, v_bf16) if new is None else \
            tuple(torch.cat([c, n.transpose(1, 2)], 2) for c, n in zip((k_bf16, v_bf16), new))

        def sdpa(i, kv=kv_all):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q_t, *kv)

        def dequant_sdpa(i):
            k, v = _dequantize_all(cache, pages, slots)
            if new is not None:
                k, v = (torch.cat([c, n.transpose(1, 2)], 2) for c, n in zip((k, v), new))
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q_t, k, v)

        def paged(i):
            return kernel(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                          cache.v_global, table, fills, npages, *(new or (None, None)))

        ref = sdpa(0).transpose(1, 2).float()
        err = float((paged(0).float() - ref).norm() / ref.norm())
        gpu = {"sdpa_bf16": bench_graph_ms(sdpa, replays=5), "nvfp4_paged": bench_graph_ms(paged, replays=5)}
        wall = {name: bench_ms(fn) for name, fn in
                (("sdpa_bf16", sdpa), ("dequant_sdpa", dequant_sdpa), ("nvfp4_paged", paged))}
        results.append({"model": model, "kind": kind, "tq": tq, "cache_tokens": tokens,
                        "new_tokens": chunk if new else 0, "gpu_ms": gpu, "wall_ms": wall, "rel_err_vs_sdpa": err,
                        "speedup_vs_sdpa_bf16": gpu["sdpa_bf16"] / gpu["nvfp4_paged"],
                        "speedup_vs_dequant_sdpa": wall["dequant_sdpa"] / wall["nvfp4_paged"],
                        "cache_bytes_nvfp4": cache.nbytes(used_only=True), "cache_bytes_bf16": bf16_bytes,
                        "memory_ratio": bf16_bytes / cache.nbytes(used_only=True)})
    return results


def run(json_path: str | None = None, models=tuple(SHAPES)) -> dict:
    rows, results = [], []
    for model in models:
        for r in run_model(model):
            results.append(r)
            rows.append(_row(f"{model} {r['kind']}", r))
    print_table("attention over a sink + window KV cache (ms, median)",
                ["workload", "Tq", "GPU: SDPA bf16", "GPU: NVFP4 paged", "x SDPA (chunk >= 0.9, decode >= 3)",
                 "wall: SDPA bf16", "wall: dequant+SDPA", "wall: NVFP4 paged", "x dequant+SDPA (> 1)",
                 "cache bf16/NVFP4", "rel err"], rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    run(args.json, args.models)
