"""Attention that reads NVFP4 KV pages directly: the reference twin of the attention kernels.

For each sequence, queries attend to the cached tokens (sink + window, page by page, each page
dequantized as a tile) and then, optionally, to the chunk's own fresh K/V (not cached yet, as
during LongLive's denoising steps), with an online softmax in fp32. No bf16 copy of the cache is
ever made, unlike "dequantize the whole cache, then SDPA".

    q                    [B, Tq, H, D]
    k_new, v_new         [B, Tn, H, D] or None
    out                  [B, Tq, H, D] in q's dtype
"""

from __future__ import annotations

import math

import torch

from .kv_cache import PagedNVFP4Cache


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


def paged_attention(q: torch.Tensor, cache: PagedNVFP4Cache, seqs: list[int],
                    k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None,
                    scale: float | None = None) -> torch.Tensor:
    """Softmax attention of ``q`` over each sequence's NVFP4 pages, then ``k_new``/``v_new``."""
    b, tq, h, d = q.shape
    if len(seqs) != b:
        raise ValueError(f"seqs: expected {b} sequence ids (one per batch row), got {len(seqs)}")
    if (h, d) != (cache.num_heads, cache.head_dim):
        raise ValueError(f"q: expected [B, Tq, {cache.num_heads}, {cache.head_dim}], got {tuple(q.shape)}")
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
        out[row] = (acc / l[..., None]).transpose(0, 1).to(q.dtype)
    return out
