"""Benchmark: attention over a LongLive KV cache (frame sink + rolling window), NVFP4 pages vs bf16.

For each model of DESIGN.md (Wan-1.3B: chunk 4680 tokens, cache 4680 sink + 18720 window, 12x128
heads; Wan-5B: chunk 7040, cache 7040 + 28160, 24x128), in one run:

    sdpa_bf16         PyTorch's flash SDPA over a bf16 cache holding the same tokens (the baseline)
    dequant_sdpa      dequantize the whole NVFP4 cache to bf16 (PyTorch ops), then flash SDPA:
                      what LongLive-2.0 does before every attention call
    nvfp4_in_register the Triton kernel decoding the NVFP4 pages tile by tile in registers
                      (tensor cores; for decode rows also the CUDA-core kernel, "vector", and on
                      Hopper the Gluon kernel overlapping decode and wgmma, "wgmma")
    nvfp4_scratch     one Triton pass decoding the pages to a bf16 scratch, then flash SDPA
                      (page tables prepared once, as a serving loop keeps them)

Rows: "chunk" = a denoising forward (queries = the chunk, keys = cache + the chunk's own K/V) and
"decode" = Tq in (1, 16, 32, 64) over the cache alone. Times: GPU time from CUDA-graph replays for SDPA
and the kernel (the target ratios), and wall time per call (do_bench) for all three (the PyTorch
dequantize route cannot be graph-captured: it builds a lookup table per call). Memory: the
cache's bytes, NVFP4 vs bf16.

    python benchmarks/bench_attention.py [--models wan-1.3b wan-5b] [--json out.json] [--sweep | --sweep-decode | --sweep-splits]
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
DECODE_TQ = (1, 16, 32, 64)


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
    g, w, x, e = r["gpu_ms"], r["wall_ms"], r["speedup_vs_sdpa_bf16"], r["rel_err_vs_sdpa"]
    return [label, r["tq"], g["sdpa_bf16"], g["nvfp4_in_register"], g.get("nvfp4_vector", "-"),
            g.get("nvfp4_wgmma", "-"), g["nvfp4_scratch"], x["in_register"], x.get("vector", "-"), x.get("wgmma", "-"),
            x["scratch"], r["auto_strategy"], w["dequant_sdpa"], w["nvfp4_auto"], r["speedup_vs_dequant_sdpa"],
            r["memory_ratio"], e["in_register"], e.get("vector", "-"), e.get("wgmma", "-"), e["scratch"]]


class Workload:
    """One model's cache, page tables, bf16 twin of the cache, and the attention routes over them."""

    def __init__(self, model: str):
        heads, dim, self.chunk, sink, window = SHAPES[model]
        self.model, self.heads, self.dim = model, heads, dim
        self.cache = _fill_cache(heads, dim, self.chunk, sink, window)
        self.tokens = self.cache.length(0)
        self.table, self.fills, self.npages = self.cache.page_tables([0])
        self.pages = self.table[0, : int(self.npages[0])].long()
        self.slots = _slot_index(self.fills, self.npages)
        self.k_bf16, self.v_bf16 = _dequantize_all(self.cache, self.pages, self.slots)  # bf16 cache, same tokens
        self.gen = torch.Generator(device="cuda").manual_seed(1)

    @property
    def page_args(self) -> tuple:
        """The cache's arrays and page tables as the attention kernels take them (npages follows)."""
        c = self.cache
        return (c.k_data, c.k_scale, c.k_global, c.v_data, c.v_scale, c.v_global, self.table, self.fills)

    def sdpa_baseline(self, q) -> tuple[torch.Tensor, float]:
        """(fp32 output, GPU ms from CUDA-graph replays) of flash SDPA over the bf16 twin of the
        cache for ``q`` (no fresh K/V): the baseline of the decode A/B scripts."""
        sdpa = self.routes(q, None)["sdpa_bf16"]
        return sdpa(0).float(), bench_graph_ms(sdpa, replays=5)

    def inputs(self, tq: int, with_new: bool):
        q = torch.randn(1, tq, self.heads, self.dim, device="cuda", dtype=torch.bfloat16, generator=self.gen)
        new = [torch.randn(1, self.chunk, self.heads, self.dim, device="cuda", dtype=torch.bfloat16,
                           generator=self.gen) for _ in range(2)] if with_new else None
        return q, new

    def routes(self, q, new, tile=None, splits=None):
        """name -> fn(i) for the baseline SDPA, LongLive's dequantize route and the NVFP4 strategies
        (``tile``/``splits`` go to the in-register kernels: a 4-tuple to the tensor-core one, a pair
        to the CUDA-core "vector" one)."""
        from nvfp4_compiler.backends.triton.attention import paged_attention as in_register
        from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention
        from nvfp4_compiler.backends.triton.kv_decode import scratch_attention

        c = self.cache
        pages = self.page_args
        q_t = q.transpose(1, 2)
        kv_all = (self.k_bf16, self.v_bf16) if new is None else \
            tuple(torch.cat([t, n.transpose(1, 2)], 2) for t, n in zip((self.k_bf16, self.v_bf16), new))

        def sdpa(i):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q_t, *kv_all).transpose(1, 2)

        def dequant_sdpa(i):
            k, v = _dequantize_all(c, self.pages, self.slots)
            if new is not None:
                k, v = (torch.cat([t, n.transpose(1, 2)], 2) for t, n in zip((k, v), new))
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q_t, k, v).transpose(1, 2)

        def register(i):
            mma_tile = tile if tile is None or len(tile) == 4 else None
            return in_register(q, *pages, self.npages, *(new or (None, None)), tile=mma_tile, splits=splits)

        def vector(i):
            vec_tile = tile if tile is None or len(tile) == 2 else None
            return paged_decode_attention(q, *pages, self.npages, tile=vec_tile, splits=splits)

        def scratch(i):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return scratch_attention(q, *pages, self.tokens, *(new or (None, None)))

        def wgmma(i):
            from nvfp4_compiler.backends.triton.attention_wgmma import paged_decode_wgmma

            return paged_decode_wgmma(q, *pages, self.npages, splits=splits)

        decode_only = {"vector": vector, **({"wgmma": wgmma} if self.wgmma_ok(q, new) else {})}
        return {"sdpa_bf16": sdpa, "dequant_sdpa": dequant_sdpa, "in_register": register, "scratch": scratch,
                **({} if new is not None else decode_only)}

    def wgmma_ok(self, q, new) -> bool:
        """Whether the Gluon wgmma kernel applies (``paged_attention.wgmma_applies``)."""
        from nvfp4_compiler.paged_attention import wgmma_applies

        return wgmma_applies(q, PAGE, new is not None)


def _rel_err(out, ref):
    return float((out.float() - ref).norm() / ref.norm())


def wgmma_baseline(w: Workload, tq: int) -> dict:
    """What the Gluon decode A/Bs (ab_decode_ws.py, ab_decode_ring.py) compare each variant with, at
    ``tq`` queries over ``w``'s cache: the queries, the page arguments (npages included), SDPA over
    the bf16 cache (output, GPU ms) and the routed one-warpgroup kernel (output, GPU ms)."""
    from nvfp4_compiler.backends.triton.attention_wgmma import paged_decode_wgmma

    q, _ = w.inputs(tq, False)
    pages = (*w.page_args, w.npages)
    ref, sdpa_ms = w.sdpa_baseline(q)
    return {"q": q, "pages": pages, "ref": ref, "sdpa_ms": sdpa_ms, "out": paged_decode_wgmma(q, *pages),
            "ms": bench_graph_ms(lambda i: paged_decode_wgmma(q, *pages), replays=5)}


def against_wgmma(fn, base: dict, name: str) -> dict:
    """One variant ``fn(i)`` timed (GPU ms, CUDA graphs) beside ``wgmma_baseline``'s ``base``: its time
    as ``{name}_ms``, its ratios to SDPA and to the one-warpgroup kernel, its error against SDPA and
    its largest difference from that kernel."""
    out = fn(0)
    ms = bench_graph_ms(fn, replays=5)
    return {"sdpa_ms": base["sdpa_ms"], "wgmma_ms": base["ms"], f"{name}_ms": ms, "x_sdpa": base["sdpa_ms"] / ms,
            "x_wgmma": base["ms"] / ms, "wgmma_x_sdpa": base["sdpa_ms"] / base["ms"],
            "rel_err_vs_sdpa": _rel_err(out, base["ref"]),
            "max_abs_vs_wgmma": float((out.float() - base["out"].float()).abs().max())}


def run_model(model: str) -> list[dict]:
    from nvfp4_compiler.paged_attention import auto_route

    w = Workload(model)
    bf16_bytes = 2 * w.k_bf16.numel() * w.k_bf16.element_size()
    results = []
    for kind, tq in [("chunk", w.chunk)] + [("decode", t) for t in DECODE_TQ]:
        q, new = w.inputs(tq, kind == "chunk")
        fns = w.routes(q, new)
        ref = fns["sdpa_bf16"](0).float()
        auto = auto_route(tq, 0 if new is None else new[0].shape[1], w.wgmma_ok(q, new))
        routes = [r for r in ("in_register", "vector", "wgmma", "scratch") if r in fns]
        gpu = {"sdpa_bf16": bench_graph_ms(fns["sdpa_bf16"], replays=5),
               **{f"nvfp4_{r}": bench_graph_ms(fns[r], replays=5) for r in routes}}
        wall = {"sdpa_bf16": bench_ms(fns["sdpa_bf16"]), "dequant_sdpa": bench_ms(fns["dequant_sdpa"]),
                "nvfp4_auto": bench_ms(fns[auto])}
        results.append({
            "model": model, "kind": kind, "tq": tq, "cache_tokens": w.tokens, "new_tokens": w.chunk if new else 0,
            "gpu_ms": gpu, "wall_ms": wall, "auto_strategy": auto,
            "rel_err_vs_sdpa": {r: _rel_err(fns[r](0), ref) for r in routes},
            "speedup_vs_sdpa_bf16": {r: gpu["sdpa_bf16"] / gpu[f"nvfp4_{r}"] for r in routes},
            "speedup_vs_dequant_sdpa": wall["dequant_sdpa"] / wall["nvfp4_auto"],
            "cache_bytes_nvfp4": w.cache.nbytes(used_only=True), "cache_bytes_bf16": bf16_bytes,
            "memory_ratio": bf16_bytes / w.cache.nbytes(used_only=True)})
    return results


# (kind, Tq) -> (BLOCK_M, BLOCK_N, num_warps, num_stages) tiles and split counts tried by --sweep
# for the in-register kernel (None = its default)
DECODE_TILES = [(16, 64, 2, 2), (16, 64, 2, 3), (16, 32, 2, 2), (16, 32, 2, 3), (16, 64, 4, 2)]
SWEEP = {("chunk", None): ([(256, 64, 8, 2), (256, 64, 8, 3)], (None,)),
         ("decode", 1): (DECODE_TILES, (None, 96)),
         ("decode", 16): (DECODE_TILES[:3], (None,)),
         ("decode", 64): ([(64, 64, 4, 3), (64, 64, 4, 2), (64, 32, 4, 3)], (None, 16))}
CROSSOVER_TQ = (16, 64, 128, 256, 512, 1024, 2048)


def sweep(model: str, plan: dict = SWEEP, crossover: bool = True) -> list[dict]:
    """In-register kernel tiles and splits (``plan``: (kind, Tq) -> (tiles, split counts); by
    default chunk and Tq=1/16/64) and the scratch-vs-in-register crossover in Tq."""
    w = Workload(model)
    out = []
    for (kind, tq), (tiles, split_counts) in plan.items():
        tq = tq or w.chunk
        q, new = w.inputs(tq, kind == "chunk")
        base = w.routes(q, new)
        sdpa_ms = bench_graph_ms(base["sdpa_bf16"], replays=5)
        ref = base["sdpa_bf16"](0).float()
        for tile in tiles:
            for splits in split_counts:
                fn = w.routes(q, new, tile=tile, splits=splits)["in_register"]
                try:
                    err = _rel_err(fn(0), ref)
                    ms = bench_graph_ms(fn, replays=5)
                except Exception as e:  # a tile that does not fit (shared memory) is a result too
                    print(f"{kind} {tq} {tile} splits={splits}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                out.append({"model": model, "kind": kind, "tq": tq, "tile": tile, "splits": splits, "ms": ms,
                            "sdpa_ms": sdpa_ms, "x_sdpa": sdpa_ms / ms, "rel_err": err})
                print(f"{kind:6} Tq={tq:5} tile={tile} splits={splits}: {ms:.4f} ms, {sdpa_ms / ms:.3f}x SDPA, "
                      f"err {err:.1e}", flush=True)
    for tq in CROSSOVER_TQ if crossover else ():
        q, new = w.inputs(tq, True)
        fns = w.routes(q, new)
        ms = {r: bench_graph_ms(fns[r], replays=5) for r in ("sdpa_bf16", "in_register", "scratch")}
        out.append({"model": model, "kind": "crossover", "tq": tq, "gpu_ms": ms})
        print(f"crossover Tq={tq:5} (+{w.chunk} fresh): " + ", ".join(f"{k} {v:.4f} ms" for k, v in ms.items()),
              flush=True)
    return out


# CUDA-core decode kernel: (BLOCK_N, num_warps) tiles and programs per SM tried by --sweep-decode
VECTOR_TILES = [(64, 4), (64, 8), (64, 2), (32, 2), (32, 4), (16, 1), (16, 2)]
VECTOR_PROGRAMS_PER_SM = (4, 8, 16, 32)
VECTOR_SWEEP_TQ = (1, 2, 4)


# --sweep-splits: tensor-core kernel tiles x forced split counts at decode-sized Tq (None =
# choose_splits, whose cap was tuned before the sixth session's one-pass combine)
SPLIT_COUNTS = (None, 12, 22, 33, 44, 66, 92)
SPLIT_SWEEP = {("decode", 16): ([(16, 64, 2, 2), (16, 64, 4, 2)], SPLIT_COUNTS),
               ("decode", 64): ([(64, 64, 4, 3), (64, 64, 4, 2), (32, 64, 4, 2), (32, 64, 2, 2), (16, 64, 2, 2)],
                                SPLIT_COUNTS)}


def sweep_decode(model: str) -> list[dict]:
    """The CUDA-core decode kernel's tiles and split counts against SDPA and the tensor-core kernel."""
    from nvfp4_compiler.backends.triton.attention_decode import choose_decode_splits

    w = Workload(model)
    out = []
    for tq in VECTOR_SWEEP_TQ:
        q, _ = w.inputs(tq, False)
        base = w.routes(q, None)
        ref = base["sdpa_bf16"](0).float()
        sdpa_ms = bench_graph_ms(base["sdpa_bf16"], replays=5)
        mma_ms = bench_graph_ms(base["in_register"], replays=5)
        print(f"decode Tq={tq}: SDPA {sdpa_ms:.4f} ms, tensor-core kernel {mma_ms:.4f} ms ({sdpa_ms / mma_ms:.2f}x)")
        for tile in VECTOR_TILES:
            for pps in VECTOR_PROGRAMS_PER_SM:
                splits = choose_decode_splits(tq * w.heads, w.table.shape[1], q.device, pps)
                fn = w.routes(q, None, tile=tile, splits=splits)["vector"]
                try:
                    err = _rel_err(fn(0), ref)
                    ms = bench_graph_ms(fn, replays=5)
                except Exception as e:  # a tile that does not compile is a result too
                    print(f"vector Tq={tq} {tile} pps={pps}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                out.append({"model": model, "kind": "vector", "tq": tq, "tile": tile, "programs_per_sm": pps,
                            "splits": splits, "ms": ms, "sdpa_ms": sdpa_ms, "mma_ms": mma_ms,
                            "x_sdpa": sdpa_ms / ms, "rel_err": err})
                print(f"vector Tq={tq:3} tile={tile} pps={pps:2} splits={splits:4}: {ms:.4f} ms, "
                      f"{sdpa_ms / ms:.3f}x SDPA, err {err:.1e}", flush=True)
    return out


def run(json_path: str | None = None, models=tuple(SHAPES), do_sweep: bool = False,
        do_sweep_decode: bool = False, do_sweep_splits: bool = False) -> dict:
    if do_sweep_splits:
        return finish(json_path, [r for m in models for r in sweep(m, SPLIT_SWEEP, crossover=False)])
    if do_sweep_decode:
        return finish(json_path, [r for m in models for r in sweep_decode(m)])
    if do_sweep:
        return finish(json_path, [r for m in models for r in sweep(m)])
    rows, results = [], []
    for model in models:
        for r in run_model(model):
            results.append(r)
            rows.append(_row(f"{model} {r['kind']}", r))
    print_table("attention over a sink + window KV cache (ms, median)",
                ["workload", "Tq", "GPU: SDPA bf16", "GPU: in-register", "GPU: vector", "GPU: wgmma",
                 "GPU: scratch+SDPA", "x SDPA in-reg", "x SDPA vector", "x SDPA wgmma",
                 "x SDPA scratch (chunk >= 0.9, decode >= 3)", "auto picks", "wall: dequant+SDPA", "wall: NVFP4 auto",
                 "x dequant+SDPA (> 1)", "cache bf16/NVFP4", "err in-reg", "err vector", "err wgmma", "err scratch"],
                rows)
    return finish(json_path, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--sweep", action="store_true",
                        help="tune the in-register kernel's tiles/splits and find the scratch crossover in Tq")
    parser.add_argument("--sweep-decode", action="store_true",
                        help="tune the CUDA-core decode kernel's tiles and split counts (Tq = 1, 2, 4)")
    parser.add_argument("--sweep-splits", action="store_true",
                        help="tensor-core kernel tiles x split counts at Tq = 16 and 64")
    args = parser.parse_args()
    run(args.json, args.models, args.sweep, args.sweep_decode, args.sweep_splits)
