"""What the ``nvfp4_kv_cache`` pass's rewritten attention calls at run time.

A model that keeps its K/V cache in dense buffers writes each chunk's K/V into a slice of them and
attends over the filled prefix. After the pass, the graph calls :func:`cached_attention` instead:
the chunk's K/V go into a :class:`PagedNVFP4Cache` that stands in for the buffer pair (one per
pair, found by the buffer tensors themselves, so identical blocks sharing one compiled graph keep
separate caches), and the attention reads the earlier tokens from the NVFP4 pages in place.
The dense buffers are then neither written nor read by compiled code; their contents go stale.

A model that instead takes its past K/V as arguments, concatenates the chunk's K/V to them and
returns the concatenation as the next call's past (Hugging Face's legacy ``past_key_values``)
calls :func:`concat_attention`. What it returns as the past is then a *handle* to NVFP4 pages: a
tensor of the concatenation's shape, dtype and device that holds one NaN (expanded, stride 0),
so the caller's loop and ``past[0].shape`` work unchanged while the K/V live in the pages.
:func:`dense_past` gives the dequantized K/V of a handle. The first past a caller passes in
(dense, from an uncompiled or unconverted call) is quantized into a new store.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

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
        self.writes: list[tuple[int, int]] = []  # (end position, serial) of each write held, oldest first

    def _restart(self) -> None:
        for seq in self.seqs:
            self.cache.free_sequence(seq)
            self.cache.add_sequence(seq)
        self.written = 0
        self.writes.clear()

    def _append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v [B, T, H, D]: one append per sequence, growing the storage when it runs out."""
        for row, seq in enumerate(self.seqs):
            try:
                self.cache.append(seq, k[row], v[row])
            except CacheFullError:  # nothing was changed: grow, then append
                self.cache.grow(-(-k.shape[1] // self.cache.page_size) * len(self.seqs))
                self.cache.append(seq, k[row], v[row])
        self.written += k.shape[1]
        self.writes.append((self.written, next(_WRITE_SERIALS)))

    def roll(self, dst_start: int, dst_stop: int, src_start: int, src_stop: int) -> None:
        """The model copied buffer positions ``src_start .. src_stop`` down to ``dst_start ..
        dst_stop`` (the rest of what it wrote): drop the tokens in between."""
        start, evicted, kept = dst_start, src_start - dst_start, dst_stop - dst_start
        if evicted <= 0 or src_stop - src_start != kept or src_stop != self.written:
            raise ValueError(f"nvfp4_kv_cache: the model copies buffer positions {src_start}..{src_stop} to "
                             f"{dst_start}..{dst_stop}, but the paged NVFP4 cache holds 0..{self.written - 1}; a "
                             "converted roll moves everything after the dropped tokens down over them")
        for seq in self.seqs:  # ValueError unless the dropped tokens are whole writes (pages) after the first
            self.cache.drop(seq, start, evicted)
        self.written -= evicted
        self.writes = [(end if end <= start else end - evicted, serial) for end, serial in self.writes
                       if not start < end <= start + evicted]

    def attend(self, q, k, v, write_start: int, read_start: int, scale) -> torch.Tensor:
        """q [B, H, T, D] (SDPA's layout), k, v [B, T, H, D] -> softmax(q [cache; k]^T) [cache; v]
        [B, H, T, D], then the chunk's k, v are stored."""
        if write_start == 0:
            self._restart()
        elif write_start < self.written:
            for seq in self.seqs:  # ValueError (nothing changed) unless an earlier write began there
                self.cache.truncate(seq, write_start)
            self.written = write_start
            self.writes = [w for w in self.writes if w[0] <= write_start]
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


_WRITE_SERIALS = itertools.count(1)


class _ByTensor:
    """Values keyed by a tensor's identity; an entry goes when its tensor is freed. (A
    WeakKeyDictionary would compare tensors with ==, which is elementwise.)"""

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, object]] = {}

    def get(self, tensor: torch.Tensor):
        entry = self._entries.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def put(self, tensor: torch.Tensor, value):
        key = id(tensor)
        self._entries[key] = (weakref.ref(tensor), value)
        weakref.finalize(tensor, self._entries.pop, key, None)
        return value


_STORES = _ByTensor()  # K buffer -> its PagedKVStore


def store_for(k_buffer: torch.Tensor) -> PagedKVStore | None:
    """The paged NVFP4 store standing in for a model's K buffer, once a converted graph ran."""
    return _STORES.get(k_buffer)


def cached_attention(k_buffer: torch.Tensor, v_buffer: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor, write_start, read_start, token_capacity: int, page_size: int,
                     scale: float | None = None, token_axis: int = 2, roll=None) -> torch.Tensor:
    """The call the pass puts in place of ``buf[..., a:b, :] = k; sdpa(q, buf[..., c:b, :], ...)``.
    ``k``, ``v`` are what the model wrote: [B, H, T, D] for buffers in SDPA's layout
    (``token_axis`` 2), [B, T, H, D] for buffers in flash-attn's (``token_axis`` 1). ``roll``
    (dst_start, dst_stop, src_start, src_stop): before the write, the model copied
    ``buf[src_start:src_stop]`` down to ``buf[dst_start:dst_stop]``, dropping the tokens in between
    after a sink of ``dst_start`` (LongLive's roll)."""
    if token_axis == 2:
        k, v = k.transpose(1, 2), v.transpose(1, 2)
    store = store_for(k_buffer)
    if store is None:
        store = _STORES.put(k_buffer, PagedKVStore(q.shape[0], k.shape[2], k.shape[-1], token_capacity,
                                                  page_size, q.device))
    if roll is not None:
        store.roll(*(int(n) for n in roll))
    return store.attend(q, k, v, int(write_start), int(read_start), scale)


# ---- concatenated past K/V -------------------------------------------------------------------

@dataclass(frozen=True)
class PastHandle:
    """What a past K/V tensor stands for: the first ``tokens`` positions of ``store``, as its write
    ``serial`` left them (0 tokens: an empty past)."""
    store: PagedKVStore
    tokens: int
    serial: int

    def is_current(self) -> bool:
        """Whether the store still holds these positions as that write left them (a later call
        that started from an earlier past rewrote them otherwise)."""
        return self.tokens == 0 or (self.tokens, self.serial) in self.store.writes


# past tensor -> its PastHandle: the handles concat_attention returned and the dense pasts it
# quantized (so the denoising steps of one chunk, which pass the same past, share one store)
_PASTS = _ByTensor()


def past_handle(past: torch.Tensor) -> PastHandle | None:
    """The :class:`PastHandle` of a past K or V tensor a converted attention returned or took."""
    return _PASTS.get(past)


def _handle_tensor(shape, dtype, device, handle: PastHandle, token_axis: int) -> torch.Tensor:
    """A tensor of ``shape`` that holds no K/V: one NaN, expanded (so reading it as data shows)."""
    past = torch.full((), float("nan"), dtype=dtype, device=device).expand(shape)
    _PASTS.put(past, handle)
    torch._dynamo.maybe_mark_dynamic(past, token_axis)
    return past


def _is_handle_view(past: torch.Tensor) -> bool:
    """An unregistered view of a handle (sliced, reshaped): it has a handle's stride-0 storage."""
    return past.numel() > 1 and all(s == 0 for s in past.stride()) and bool(torch.isnan(past[(0,) * past.dim()]))


def _past_store(past_k, past_v, page_size: int, token_axis: int, fresh_tokens: int) -> PastHandle:
    """The handle a call's past (as the caller passed it) stands for; a dense past becomes a new
    store holding its K/V."""
    handle = past_handle(past_k)
    if handle is not None or past_handle(past_v) is not None:
        if handle is None or past_handle(past_v) != handle:
            raise ValueError("past: K and V are not the pair one converted attention returned")
        if not handle.is_current():
            raise ValueError("past: these NVFP4 K/V were rewritten by a later call that started from an earlier "
                             "past (each denoising step replaces the one before); pass the past returned by the "
                             "call whose K/V you keep")
        return handle
    if _is_handle_view(past_k) or _is_handle_view(past_v):
        raise ValueError("past: a slice or reshape of the K/V handle a converted attention returned; pass "
                         "the handle itself (kv_runtime.dense_past gives its K/V as a tensor)")
    dense_k, dense_v = (t.transpose(1, 2) if token_axis == 2 else t for t in (past_k, past_v))  # [B, T, H, D]
    batch, tokens, heads, head_dim = dense_k.shape
    store = PagedKVStore(batch, heads, head_dim, tokens + fresh_tokens, page_size, dense_k.device)
    if tokens:
        store._append(dense_k, dense_v)
    handle = PastHandle(store, tokens, store.writes[-1][1] if tokens else 0)
    _PASTS.put(past_k, handle)
    _PASTS.put(past_v, handle)
    return handle


def concat_attention(past_k: torch.Tensor, past_v: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor, page_size: int, scale: float | None = None, token_axis: int = 2):
    """The call the pass puts in place of ``k_all = cat([past_k, k]); v_all = cat([past_v, v]);
    out = sdpa(q, k_all, v_all)`` whose ``k_all``, ``v_all`` go back to the caller as the next past.

    ``q`` is SDPA's [B, H, T, D]; the pasts and ``k``, ``v`` are [B, H, T, D] (``token_axis`` 2)
    or [B, T, H, D] (``token_axis`` 1). Returns (out, K handle, V handle): the handles have the
    concatenation's shape and stand for the store's positions after this call's K/V."""
    handle = _past_store(past_k, past_v, page_size, token_axis, k.shape[token_axis])
    if token_axis == 2:
        k, v = k.transpose(1, 2), v.transpose(1, 2)
    store = handle.store
    out = store.attend(q, k, v, handle.tokens, 0, scale)
    new = PastHandle(store, store.written, store.writes[-1][1])
    shape = [*k.shape]  # [B, T, H, D]
    shape[1] = store.written
    if token_axis == 2:
        shape[1], shape[2] = shape[2], shape[1]
    return out, *(_handle_tensor(shape, t.dtype, t.device, new, token_axis) for t in (k, v))


def dense_past(past: torch.Tensor, which: str) -> torch.Tensor:
    """The dequantized K (``which="k"``) or V of a past handle, fp32 [B, T, H, D]."""
    handle = past_handle(past)
    if handle is None:
        raise ValueError("past: not a K/V handle returned by a converted attention")
    if not handle.is_current():
        raise ValueError("past: these NVFP4 K/V were rewritten by a later call that started from an earlier past")
    if which not in ("k", "v"):
        raise ValueError(f"which: expected 'k' or 'v', got {which!r}")
    rows = [handle.store.cache.gather(seq)[which == "v"][: handle.tokens] for seq in handle.store.seqs]
    return torch.stack(rows)
