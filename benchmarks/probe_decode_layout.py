"""Probe: is decode attention over the NVFP4 cache bound by the cache's head-interleaved layout?

The same bytes and the same number of programs, two layouts: the Wan-1.3B cache (12 heads, one
sequence: a head's token rows are 64 B apart-strided by 768 B within a page) against 12
sequences of one head each (a head's page is 4 KB contiguous). Both decode kernels, Tq = 1, GPU
time from CUDA-graph replays; and a device-to-device copy of the same bytes as the bandwidth bar.

    python benchmarks/probe_decode_layout.py [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import bench_graph_ms, finish, print_table  # noqa: E402

PAGE, DIM, CHUNK, SINK, WINDOW, HEADS = 64, 128, 4680, 4680, 18720, 12


def _cache(heads: int, seqs: int):
    from nvfp4_compiler.kv_cache import PagedNVFP4Cache

    chunks = [SINK] + [CHUNK] * (WINDOW // CHUNK)
    pages = seqs * sum(-(-n // PAGE) for n in chunks)
    cache = PagedNVFP4Cache(pages, PAGE, heads, DIM, window_tokens=WINDOW, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for s in range(seqs):
        cache.add_sequence(s)
        for i, n in enumerate(chunks):
            k, v = (torch.randn(n, heads, DIM, device="cuda", generator=gen) for _ in range(2))
            cache.append(s, k, v, sink=i == 0)
    return cache


def main(json_path):
    from nvfp4_compiler.backends.triton.attention import paged_attention as tensor_core
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention as vector

    rows, results = [], []
    for label, heads, seqs in (("12 heads x 1 sequence (interleaved)", HEADS, 1),
                               ("1 head x 12 sequences (contiguous)", 1, HEADS)):
        c = _cache(heads, seqs)
        table, fills, npages = c.page_tables(list(range(seqs)))
        pages = (c.k_data, c.k_scale, c.k_global, c.v_data, c.v_scale, c.v_global, table, fills, npages)
        q = torch.randn(seqs, 1, heads, DIM, device="cuda", dtype=torch.bfloat16)
        nbytes = c.nbytes(used_only=True)
        ms = {"vector": bench_graph_ms(lambda i: vector(q, *pages), replays=5),
              "tensor_core": bench_graph_ms(lambda i: tensor_core(q, *pages), replays=5),
              "copy_same_bytes": bench_graph_ms(lambda i: (c.k_data.clone(), c.v_data.clone()), replays=5)}
        r = {"layout": label, "bytes": nbytes, "ms": ms, "tb_per_s": {k: nbytes / v / 1e9 for k, v in ms.items()}}
        results.append(r)
        rows.append([label, nbytes / 2**20, ms["vector"], ms["tensor_core"], ms["copy_same_bytes"],
                     r["tb_per_s"]["vector"], r["tb_per_s"]["tensor_core"]])
    print_table("decode Tq=1 over 23400 tokens x 12 heads, NVFP4 pages (ms)",
                ["layout", "MiB", "vector", "tensor-core", "copy k,v data", "TB/s vector", "TB/s tensor-core"], rows)
    finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    main(parser.parse_args().json)
