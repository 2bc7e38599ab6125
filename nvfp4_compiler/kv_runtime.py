"""What the ``nvfp4_kv_cache`` pass's rewritten attention calls at run time.

A model that keeps its K/V cache in dense buffers writes each chunk's K/V into a slice of them and
attends over the filled prefix. After the pass, the graph calls :func:`cached_attention` instead:
the chunk's K/V go into a :class:`PagedNVFP4Cache` that stands in for the buffer pair (one per
pair, found by the buffer tensors themselves, so identical blocks sharing one compiled graph keep
separate caches), and the attention reads the earlier tokens from the NVFP4 pages in place.

The dense buffers are then neither written nor read by compiled code; their contents go stale.
"""

from __future__ import annotations

import weakref

import torch

from .kv_cache import CacheFullError, PagedNVFP4Cache
from .paged_attention import paged_attention


class PagedKVStore:
    """The paged NVFP4 cache standing in for one (K buffer, V buffer) pair; one sequence per
    batch row. Positions are the buffer's token indices. A write at the end appends; a write that
    starts at an earlier write's start replaces everything from there (LongLive's denoising steps
    rewrite the current chunk, then the clean pass writes it for good); a write at 0 restarts.
    The attention must read from position 0."""

    def __init__(self, batch: int, heads: int, head_dim: int, capacity: int, page_size: int, device):
        pages = batch * (-(-capacity // page_size) + 4)
        self.cache = PagedNVFP4Cache(pages, page_size, heads, head_dim, device=device)
        self.seqs = list(range(batch))
        for seq in self.seqs:
            self.cache.add_sequence(seq)
        self.written = 0  # buffer positions 0 .. written-1 are in the cache

    def _restart(self) -> None:
        for seq in self.seqs:
            self.cache.free_sequence(seq)
            self.cache.add_sequence(seq)
        self.written = 0

    def _append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v [B, T, H, D]: one append per sequence, growing the storage when it runs out."""
        for row, seq in enumerate(self.seqs):
            try:
                self.cache.append(seq, k[row], v[row])
            except CacheFullError:  # nothing was changed: grow, then append
                self.cache.grow(-(-k.shape[1] // self.cache.page_size) * len(self.seqs))
                self.cache.append(seq, k[row], v[row])
        self.written += k.shape[1]

    def attend(self, q, k, v, write_start: int, read_start: int, scale) -> torch.Tensor:
        """q [B, H, T, D] (SDPA's layout), k, v [B, T, H, D] -> softmax(q [cache; k]^T) [cache; v]
        [B, H, T, D], then the chunk's k, v are stored."""
        if write_start == 0:
            self._restart()
        elif write_start < self.written:
            for seq in self.seqs:  # ValueError (nothing changed) unless an earlier write began there
                self.cache.truncate(seq, write_start)
            self.written = write_start
        elif write_start > self.written:
            raise ValueError(f"nvfp4_kv_cache: the model writes K/V at positions {write_start}.. but the paged "
                             f"NVFP4 cache holds positions 0..{self.written - 1}; a converted cache is written "
                             f"in order, rewritten from an earlier write's start, or restarted at 0")
        if read_start != 0:
            raise ValueError(f"nvfp4_kv_cache: the model's attention reads the cache from position {read_start}; "
                             f"a converted cache is read from position 0")
        out = paged_attention(q.transpose(1, 2), self.cache, self.seqs, k, v, scale=scale)
        self._append(k, v)
        return out.transpose(1, 2)


# id(K buffer) -> (weak reference to it, its store); an entry goes when its buffer is freed.
# (A WeakKeyDictionary would compare tensors with ==, which is elementwise.)
_STORES: dict[int, tuple[weakref.ref, PagedKVStore]] = {}


def store_for(k_buffer: torch.Tensor) -> PagedKVStore | None:
    """The paged NVFP4 store standing in for a model's K buffer, once a converted graph ran."""
    entry = _STORES.get(id(k_buffer))
    return entry[1] if entry is not None and entry[0]() is k_buffer else None


def _new_store(k_buffer: torch.Tensor, store: PagedKVStore) -> PagedKVStore:
    key = id(k_buffer)
    _STORES[key] = (weakref.ref(k_buffer), store)
    weakref.finalize(k_buffer, _STORES.pop, key, None)
    return store


def cached_attention(k_buffer: torch.Tensor, v_buffer: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor, write_start, read_start, token_capacity: int, page_size: int,
                     scale: float | None = None, token_axis: int = 2) -> torch.Tensor:
    """The call the pass puts in place of ``buf[..., a:b, :] = k; sdpa(q, buf[..., c:b, :], ...)``.
    ``k``, ``v`` are what the model wrote: [B, H, T, D] for buffers in SDPA's layout
    (``token_axis`` 2), [B, T, H, D] for buffers in flash-attn's (``token_axis`` 1)."""
    if token_axis == 2:
        k, v = k.transpose(1, 2), v.transpose(1, 2)
    store = store_for(k_buffer)
    if store is None:
        store = _new_store(k_buffer, PagedKVStore(q.shape[0], k.shape[2], k.shape[-1], token_capacity,
                                                  page_size, q.device))
    return store.attend(q, k, v, int(write_start), int(read_start), scale)
