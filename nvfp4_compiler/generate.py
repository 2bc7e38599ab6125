"""Chunk-by-chunk video generation with flow matching, LongLive style.

Each chunk starts from noise at t=1 and takes ``steps`` Euler steps to t=0, attending to a frame
sink (the first chunk, never dropped) and a rolling window of recent chunks. Two ways to hold the
earlier chunks:
- ``generate``: their clean latents, re-encoded as context on every forward (no cache);
- ``generate_cached``: their K/V in NVFP4 pages (:class:`ChunkKVCache`), written once by a clean
  forward at t=0 after each chunk, and read by the attention directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .kv_cache import PagedNVFP4Cache
from .paged_attention import paged_attention


def context_for(chunks: list[torch.Tensor], window_chunks: int) -> tuple[torch.Tensor | None, int]:
    """(clean latents to attend to, frame index where they end): the sink plus the last window."""
    if not chunks:
        return None, 0
    kept = chunks if len(chunks) <= 1 + window_chunks else [chunks[0], *chunks[-window_chunks:]]
    frames_before = sum(c.shape[2] for c in chunks)
    return torch.cat(kept, dim=2), frames_before


@torch.no_grad()
def generate(model: Callable, noise: list[torch.Tensor], text: torch.Tensor, *, steps: int = 4,
             window_chunks: int = 1, on_step: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """Denoise each chunk of ``noise`` ([B, C, F, H, W] each) in order; return the clean chunks."""
    chunks: list[torch.Tensor] = []
    times = torch.linspace(1.0, 0.0, steps + 1)
    for chunk_noise in noise:
        # The model places the context's frames just before ``offset`` for RoPE, so once middle
        # chunks are dropped the sink is positioned next to the window (as a rolling cache would).
        context, offset = context_for(chunks, window_chunks)
        x = chunk_noise
        for t, t_next in zip(times[:-1], times[1:]):
            timestep = torch.full((x.shape[0],), float(t) * 1000, device=x.device)
            velocity = model(x, timestep, text, context=context, frame_offset=offset)
            x = x + (t_next - t) * velocity
            if on_step is not None:
                on_step()
        chunks.append(x)
    return chunks


class LayerKV:
    """One layer's view of a :class:`ChunkKVCache` for one forward: attend, and append if writing."""

    def __init__(self, cache, seqs: list[int], write: bool, attention: str):
        self.cache, self.seqs, self.write, self.attention = cache, seqs, write, attention

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v [B, H, T, Dh] of the current chunk -> attention output [B, H, T, Dh] over the
        cached pages (as they are before this call) and the chunk itself; then, when writing,
        the chunk's K/V go into the cache."""
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))       # [B, T, H, Dh]
        if self.attention == "paged":
            out = paged_attention(qt, self.cache, self.seqs, kt, vt)
        else:  # LongLive-2.0's way: dequantize the whole cache to a dense copy, then SDPA
            rows = []
            for row, seq in enumerate(self.seqs):
                k_all, v_all = self.cache.gather(seq)
                k_all = torch.cat([k_all.to(kt.dtype), kt[row]]).transpose(0, 1)
                v_all = torch.cat([v_all.to(vt.dtype), vt[row]]).transpose(0, 1)
                rows.append(F.scaled_dot_product_attention(q[row], k_all, v_all).transpose(0, 1))
            out = torch.stack(rows)
        if self.write:
            for row, seq in enumerate(self.seqs):
                self.cache.append(seq, kt[row].float(), vt[row].float(), sink=self.cache.length(seq) == 0)
        return out.transpose(1, 2)


class ChunkKVCache:
    """One :class:`PagedNVFP4Cache` per transformer layer, one sequence per batch row."""

    def __init__(self, num_layers: int, batch: int, num_heads: int, head_dim: int, *, num_pages: int,
                 page_size: int = 16, window_tokens: int | None = None, device="cpu"):
        self.caches = [PagedNVFP4Cache(num_pages, page_size, num_heads, head_dim, window_tokens=window_tokens,
                                       device=device) for _ in range(num_layers)]
        for cache in self.caches:
            for seq in range(batch):
                cache.add_sequence(seq)
        self.seqs = list(range(batch))
        self.write, self.attention = False, "paged"

    def layer(self, index: int) -> LayerKV:
        return LayerKV(self.caches[index], self.seqs, self.write, self.attention)

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.caches)


@torch.no_grad()
def generate_cached(model: Callable, noise: list[torch.Tensor], text: torch.Tensor, cache: ChunkKVCache, *,
                    steps: int = 4, attention: str = "paged") -> list[torch.Tensor]:
    """Denoise each chunk attending to the NVFP4 KV cache; after each chunk, a clean forward at
    t=0 writes its K/V (the first chunk becomes the sink). ``attention``: ``"paged"`` reads the
    pages directly, ``"dequantize_all"`` copies the whole cache to dense K/V first."""
    if attention not in ("paged", "dequantize_all"):
        raise ValueError(f"attention: expected 'paged' or 'dequantize_all', got {attention!r}")
    cache.attention = attention
    chunks, offset = [], 0
    times = torch.linspace(1.0, 0.0, steps + 1)
    for chunk_noise in noise:
        x = chunk_noise
        cache.write = False
        for t, t_next in zip(times[:-1], times[1:]):
            timestep = torch.full((x.shape[0],), float(t) * 1000, device=x.device)
            x = x + (t_next - t) * model(x, timestep, text, frame_offset=offset, kv_cache=cache)
        cache.write = True  # the clean pass: K/V of the finished chunk go into the cache
        model(x, torch.zeros(x.shape[0], device=x.device), text, frame_offset=offset, kv_cache=cache)
        cache.write = False
        chunks.append(x)
        offset += x.shape[2]
    return chunks


@torch.no_grad()
def generate_dense_cache(model: Callable, noise: list[torch.Tensor], text: torch.Tensor, *,
                         steps: int = 4, on_step: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """LongLive-style generation through the model's own dense K/V buffers (build them with
    ``VideoDiT.enable_dense_kv_cache``): every denoising forward writes the chunk's K/V at the
    chunk's position and attends over the prefix; the clean t=0 forward writes them for good.
    Under ``nvfp4.compile`` the ``nvfp4_kv_cache`` pass turns those buffers into NVFP4 pages."""
    chunks, offset, position = [], 0, 0
    times = torch.linspace(1.0, 0.0, steps + 1)
    for chunk_noise in noise:
        x = chunk_noise
        for t, t_next in zip(times[:-1], times[1:]):
            timestep = torch.full((x.shape[0],), float(t) * 1000, device=x.device)
            x = x + (t_next - t) * model(x, timestep, text, frame_offset=offset, cache_position=position)
            if on_step is not None:
                on_step()
        model(x, torch.zeros(x.shape[0], device=x.device), text, frame_offset=offset, cache_position=position)
        chunks.append(x)
        offset += x.shape[2]
        position += _tokens(model, x)
    return chunks


def _tokens(model, latents: torch.Tensor) -> int:
    cfg = getattr(model, "cfg", None) or model.model.cfg
    pt, ph, pw = cfg.patch_size
    _, _, frames, height, width = latents.shape
    return (frames // pt) * (height // ph) * (width // pw)
