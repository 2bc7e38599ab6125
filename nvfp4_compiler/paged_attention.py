"""Attention that reads NVFP4 KV pages directly: the reference twin of the attention kernels.

For each sequence, queries attend to the cached tokens (sink + window, page by page, each page
dequantized as a tile) and then, optionally, to the chunk's own fresh K/V (not cached yet, as
during LongLive's denoising steps), with an online softmax in fp32. No bf16 copy of the cache is
made, unlike "dequantize the whole cache, then SDPA". On CUDA GPUs the same computation runs in
Triton (equal to this loop within fp16-rounding noise), by one of two strategies: an attention
kernel decoding K/V tiles in registers (``backends/triton/attention.py`` on tensor cores; on
Hopper ``attention_wgmma.py`` for 24-64 queries; for one query ``attention_decode.py`` on CUDA
cores), or, for chunk-sized queries where a dense flash kernel is ~2x faster on Hopper, one decode
pass into a transient scratch followed by flash SDPA (``backends/triton/kv_decode.py``).

    q                    [B, Tq, H, D]
    k_new, v_new         [B, Tn, H, D] or None
    out                  [B, Tq, H, D] in q's dtype
"""

from __future__ import annotations

import math

import torch

from .backends import triton_usable
from .kv_cache import PagedNVFP4Cache

BACKENDS = ("auto", "reference", "triton")
STRATEGIES = ("auto", "in_register", "scratch")

#: From this many queries (or fresh tokens) on, "auto" decodes the cache to a scratch tensor and
#: runs flash SDPA (backends/triton/kv_decode.py) instead of decoding K/V tiles in the attention
#: kernel. H100, Wan-1.3B cache (benchmarks/RESULTS.md): with no fresh tokens the kernel wins at
#: Tq=64 (0.117 vs 0.149 ms) and the scratch route at the chunk; with a chunk's 4680 fresh tokens
#: the scratch route wins from Tq=16 on (the kernel walks the fresh tokens in one split).
SCRATCH_MIN_QUERIES = 128
SCRATCH_MIN_FRESH = 1024
#: Up to this many queries (and no fresh K/V), the in-register route takes the CUDA-core decode
#: kernel (``backends/triton/attention_decode.py``, one program per query, no MMA) instead of the
#: tensor-core one. H100, Wan-1.3B cache (benchmarks/RESULTS.md): Tq=1 0.041 vs 0.045 ms, but
#: Tq=2 0.065 vs 0.046 ms (each query decodes the pages again).
VECTOR_MAX_QUERIES = 1
#: From this many queries up to 64 (no fresh K/V, 64-token pages), on sm_90 GPUs the in-register
#: route takes the Gluon wgmma kernel (``backends/triton/attention_wgmma.py``: K/V decode overlapped
#: with asynchronous tensor-core work) instead of the Triton one. H100, LongLive caches
#: (benchmarks/RESULTS.md, twenty-first session): Tq = 64 0.101 -> 0.065 ms (Wan-1.3B); at Tq = 16
#: and below the Triton kernel's 16-row tiles beat its 64 padded rows.
WGMMA_MIN_QUERIES = 24


def _online_softmax_step(state, q, k, v, scale):
    """Fold one tile of keys/values into (running max, running sum, accumulator)."""
    m, l, acc = state
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale          # [H, Tq, Tk]
    m_new = torch.maximum(m, scores.amax(-1))
    correction = torch.exp(m - m_new)
    p = torch.exp(scores - m_new[..., None])
    l = l * correction + p.sum(-1)
    acc = acc * correction[..., None] + torch.einsum("hqk,khd->hqd", p, v)
    return m_new, l, acc


# Never traced into a graph: the page tables come from the cache's Python state, which changes
# every call, and a traced version (Triton launch as a user-kernel node) gave wrong results on
# the H100 in explicit-cache generation.
@torch.compiler.disable
def paged_attention(q: torch.Tensor, cache: PagedNVFP4Cache, seqs: list[int],
                    k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None,
                    scale: float | None = None, backend: str = "auto", strategy: str = "auto") -> torch.Tensor:
    """Softmax attention of ``q`` over each sequence's NVFP4 pages, then ``k_new``/``v_new``.

    ``backend``: "reference" (this module's loop), "triton" (the kernel; CUDA, or the interpreter),
    or "auto" (Triton for CUDA tensors when the page size and head_dim suit it).
    ``strategy`` (Triton only): "in_register" decodes K/V tiles inside the attention kernel (no
    copy of the cache); "scratch" decodes the pages into a transient ``q.dtype`` tensor and runs
    flash SDPA (needs fp16/bf16 ``q`` and the same token count in every sequence; the scratch
    holds one call's K/V in ``q.dtype`` while it runs); "auto" takes "scratch" where it applies
    from ``SCRATCH_MIN_QUERIES`` queries or ``SCRATCH_MIN_FRESH`` fresh tokens on.
    """
    b, tq, h, d = q.shape
    if len(seqs) != b:
        raise ValueError(f"seqs: expected {b} sequence ids (one per batch row), got {len(seqs)}")
    if (h, d) != (cache.num_heads, cache.head_dim):
        raise ValueError(f"q: expected [B, Tq, {cache.num_heads}, {cache.head_dim}], got {tuple(q.shape)}")
    if (k_new is None) != (v_new is None):
        raise ValueError("k_new, v_new: pass both or neither")
    if k_new is not None and (k_new.shape != v_new.shape or k_new.shape[0] != b or k_new.shape[2:] != (h, d)):
        raise ValueError(f"k_new, v_new: expected equal shapes [{b}, Tn, {h}, {d}], got "
                         f"{tuple(k_new.shape)} and {tuple(v_new.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if _use_triton(backend, q, cache):
        return _triton_paged_attention(q, cache, seqs, k_new, v_new, scale, strategy)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    table = cache.block_table(seqs).to(q.device)
    out = torch.empty_like(q)
    for row, seq in enumerate(seqs):
        qf = q[row].float()
        state = (torch.full((h, tq), -math.inf, device=q.device), torch.zeros(h, tq, device=q.device),
                 torch.zeros(h, tq, d, device=q.device))
        fills = cache._get(seq).fill
        for i, page in enumerate(table[row][: len(fills)].tolist()):
            pages = torch.tensor([page], device=cache.k_data.device)
            k_tile = cache.dequantize_pages(pages, "k")[0, : fills[i]].to(q.device)
            v_tile = cache.dequantize_pages(pages, "v")[0, : fills[i]].to(q.device)
            state = _online_softmax_step(state, qf, k_tile, v_tile, scale)
        if k_new is not None:
            state = _online_softmax_step(state, qf, k_new[row].float(), v_new[row].float(), scale)
        m, l, acc = state
        l = torch.where(l == 0, 1.0, l)  # no keys at all (an empty sequence): 0, as SDPA gives, not NaN
        out[row] = (acc / l[..., None]).transpose(0, 1).to(q.dtype)
    return out


def _use_triton(backend: str, q: torch.Tensor, cache: PagedNVFP4Cache) -> bool:
    if backend == "reference" or (backend == "auto" and not (q.is_cuda and cache.k_data.is_cuda)):
        return False
    if not triton_usable(q.device):
        if backend == "auto":
            return False
        raise ValueError(f"backend: 'triton' needs a CUDA GPU (sm_80+) or TRITON_INTERPRET=1, got {q.device}")
    from .backends.triton.attention import supports

    if supports(cache.page_size, cache.head_dim):
        return True
    if backend == "auto":
        return False
    raise ValueError(f"backend: the Triton kernel needs page_size and head_dim powers of two "
                     f"(>= 16 and >= 32), got {cache.page_size} and {cache.head_dim}")


def auto_route(tq: int, fresh_tokens: int, wgmma_ok: bool = False) -> str:
    """The Triton route "auto" takes for ``tq`` queries and ``fresh_tokens`` fresh K/V tokens, where
    every route applies: "scratch" (decode + flash SDPA), "vector" (the single-query CUDA-core
    kernel), "wgmma" (the Gluon kernel; only where ``wgmma_ok``: ``wgmma_applies``) or
    "in_register" (the Triton tensor-core kernel)."""
    if tq >= SCRATCH_MIN_QUERIES or fresh_tokens >= SCRATCH_MIN_FRESH:
        return "scratch"
    if tq <= VECTOR_MAX_QUERIES and not fresh_tokens:
        return "vector"
    return "wgmma" if wgmma_ok and tq >= WGMMA_MIN_QUERIES else "in_register"


def _scratch_applies(q, cache, seqs, strategy: str, fresh_tokens: int) -> bool:
    """Whether to decode to a scratch tensor + SDPA (see ``paged_attention``'s ``strategy``)."""
    if strategy == "in_register":
        return False
    problems = []
    if q.dtype not in (torch.float16, torch.bfloat16):
        problems.append(f"q is {q.dtype}, not fp16/bf16")
    if len({cache.length(s) for s in seqs}) > 1:
        problems.append("the sequences hold different token counts")
    if strategy == "scratch" and problems:
        raise ValueError(f"strategy: 'scratch' does not apply here: {'; '.join(problems)}")
    return not problems and (strategy == "scratch" or auto_route(q.shape[1], fresh_tokens) == "scratch")


def _triton_paged_attention(q, cache, seqs, k_new, v_new, scale, strategy):
    from .backends.triton.attention import paged_attention as tensor_core_kernel
    from .backends.triton.attention_decode import paged_decode_attention
    from .backends.triton.kv_decode import scratch_attention

    table, fills, npages = cache.page_tables(seqs, q.device)
    pages = (cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale, cache.v_global, table, fills)
    fresh_tokens = 0 if k_new is None else k_new.shape[1]
    if _scratch_applies(q, cache, seqs, strategy, fresh_tokens):
        return scratch_attention(q, *pages, cache.length(seqs[0]), k_new, v_new, scale)
    route = auto_route(q.shape[1], fresh_tokens, wgmma_applies(q, cache.page_size, k_new is not None))
    if route == "vector":
        return paged_decode_attention(q, *pages, npages, scale)
    if route == "wgmma":
        from .backends.triton.attention_wgmma import paged_decode_wgmma

        return paged_decode_wgmma(q, *pages, npages, scale)
    return tensor_core_kernel(q, *pages, npages, k_new, v_new, scale)


def wgmma_applies(q: torch.Tensor, page_size: int, has_new: bool) -> bool:
    """Whether the Gluon wgmma kernel can take this call (``attention_wgmma.supports``: an sm_90 GPU,
    2-64 queries, no fresh K/V, 64-token pages); False where the installed Triton has no Gluon."""
    if not q.is_cuda:
        return False
    try:
        from .backends.triton.attention_wgmma import supports
    except ImportError:
        return False
    return supports(q, page_size, has_new)
