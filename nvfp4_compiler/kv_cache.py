"""``PagedNVFP4Cache``: attention K/V in paged NVFP4 storage (NVFP4_SPEC.md, "KV cache").

Layout (P physical pages of S token slots, H heads, D head_dim), as FlashInfer's NVFP4 paged cache:
    k_data, v_data      [P, S, H, D/2]   uint8          E2M1 pairs, element 2i in the low nibble
    k_scale, v_scale    [P, S, H, D/16]  float8_e4m3fn  1x16 block scales along head_dim
    k_global, v_global  [P, H]           float32        decode scale of what one write put on the page
    block table         [sequences, max_pages] int32    logical page -> physical page (-1: none)

Policies, LongLive style:
- Each ``append`` quantizes its chunk once, with one FP32 scale per head for the whole chunk, and
  starts on a fresh page, so appending never re-quantizes what is stored (the last page of a
  chunk may be partly empty).
- The first chunk of a sequence may be marked as the frame *sink*: its pages are never evicted.
- With ``window_tokens`` set, appending evicts the oldest non-sink pages until at most that many
  non-sink tokens remain (a rolling window).
- ``rewrite`` re-caches a page-aligned range in place (LongLive's KV re-cache on a prompt switch).
- Every operation checks that it can complete before changing anything: running out of pages
  raises :class:`CacheFullError` and leaves the cache as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .format import quantize_slices
from .format.e2m1 import e2m1_decode, unpack_nibbles


class CacheFullError(RuntimeError):
    """Not enough free pages for an operation; nothing was changed."""


@dataclass
class _Sequence:
    pages: list[int] = field(default_factory=list)   # physical page ids, logical order
    fill: list[int] = field(default_factory=list)    # tokens stored on each page
    sink_pages: int = 0                              # leading pages that are never evicted
    evicted_tokens: int = 0                          # tokens dropped from the window so far


class PagedNVFP4Cache:
    """Paged NVFP4 K/V storage for several sequences (see the module docstring)."""

    def __init__(self, num_pages: int, page_size: int, num_heads: int, head_dim: int, *,
                 window_tokens: int | None = None, device: str | torch.device = "cpu"):
        for name, value in (("num_pages", num_pages), ("page_size", page_size), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if head_dim % 16:
            raise ValueError(f"head_dim: expected a multiple of 16 (NVFP4 blocks), got {head_dim}")
        if window_tokens is not None and window_tokens < page_size:
            raise ValueError(f"window_tokens: expected at least one page ({page_size} tokens), got {window_tokens}")
        self.page_size, self.num_heads, self.head_dim = page_size, num_heads, head_dim
        self.window_tokens = window_tokens
        shape = (num_pages, page_size, num_heads)
        self.k_data = torch.zeros(*shape, head_dim // 2, dtype=torch.uint8, device=device)
        self.v_data = torch.zeros_like(self.k_data)
        self.k_scale = torch.zeros(*shape, head_dim // 16, dtype=torch.float8_e4m3fn, device=device)
        self.v_scale = torch.zeros_like(self.k_scale)
        self.k_global = torch.zeros(num_pages, num_heads, dtype=torch.float32, device=device)
        self.v_global = torch.zeros_like(self.k_global)
        self._free = list(range(num_pages - 1, -1, -1))  # a stack: pop() gives low ids first
        self._seqs: dict[int, _Sequence] = {}
        # page_tables' device tensors by (sequences, device), kept until pages or fills change: an
        # attention call then launches its kernel without building them (Python over every page)
        # and without a host-to-device copy, which waits for the stream's queued work
        self._tables: dict = {}

    # ---- bookkeeping -------------------------------------------------------------------------
    @property
    def num_pages(self) -> int:
        return self.k_data.shape[0]

    @property
    def free_pages(self) -> int:
        return len(self._free)

    def sequences(self) -> list[int]:
        return list(self._seqs)

    def length(self, seq: int) -> int:
        """Tokens currently stored for ``seq`` (after evictions)."""
        return sum(self._get(seq).fill)

    def start_position(self, seq: int) -> int:
        """Logical position of the first stored non-sink token (tokens before it were evicted)."""
        return self._get(seq).evicted_tokens

    def _get(self, seq: int) -> _Sequence:
        if seq not in self._seqs:
            raise KeyError(f"seq: no sequence {seq} in the cache")
        return self._seqs[seq]

    def add_sequence(self, seq: int) -> None:
        if seq in self._seqs:
            raise ValueError(f"seq: sequence {seq} already exists")
        self._tables.clear()
        self._seqs[seq] = _Sequence()

    def free_sequence(self, seq: int) -> None:
        """Drop a sequence and return its pages to the free list."""
        state = self._seqs.pop(seq) if seq in self._seqs else self._get(seq)
        self._tables.clear()
        self._free.extend(reversed(state.pages))

    def block_table(self, seqs: list[int] | None = None) -> torch.Tensor:
        """int32 [len(seqs), max pages] of physical page ids, -1 past each sequence's last page."""
        seqs = self.sequences() if seqs is None else seqs
        width = max((len(self._get(s).pages) for s in seqs), default=0)
        table = torch.full((len(seqs), width), -1, dtype=torch.int32)
        for row, seq in enumerate(seqs):
            pages = self._get(seq).pages
            table[row, : len(pages)] = torch.tensor(pages, dtype=torch.int32)
        return table

    def page_tables(self, seqs: list[int], device: torch.device | str | None = None):
        """(block table, fills, page counts) as int32 tensors on ``device`` (the cache's by
        default), what an attention kernel walks: [B, max pages], [B, max pages] tokens stored on
        each page (0 past the end), [B].

        The tensors are built once and returned again until a sequence's pages or fills change
        (``append``, ``truncate``, ``add_sequence``, ``free_sequence``): read them, never write
        them."""
        device = torch.device(self.k_data.device if device is None else device)
        key = (tuple(seqs), device)
        if key not in self._tables:
            table = self.block_table(seqs)
            fills = torch.zeros_like(table)
            for row, seq in enumerate(seqs):
                fill = self._get(seq).fill
                fills[row, : len(fill)] = torch.tensor(fill, dtype=torch.int32)
            npages = (fills > 0).sum(1, dtype=torch.int32)
            self._tables[key] = (table.to(device), fills.to(device), npages.to(device))
        return self._tables[key]

    def grow(self, extra_pages: int) -> None:
        """Add ``extra_pages`` free pages (the storage is reallocated; stored pages keep their ids)."""
        if not isinstance(extra_pages, int) or extra_pages < 1:
            raise ValueError(f"extra_pages: expected a positive int, got {extra_pages!r}")
        old = self.num_pages
        for name in ("k_data", "v_data", "k_scale", "v_scale", "k_global", "v_global"):
            t = getattr(self, name)
            pad = torch.zeros(extra_pages, *t.shape[1:], dtype=t.dtype, device=t.device)
            setattr(self, name, torch.cat([t, pad]))
        self._free[:0] = range(old + extra_pages - 1, old - 1, -1)  # the new pages are taken last

    def nbytes(self, *, used_only: bool = False) -> int:
        """Bytes of all K/V storage (data, block scales and per-page scales); with ``used_only``,
        of the pages sequences hold (free pages left out)."""
        total = sum(t.numel() * t.element_size() for t in
                    (self.k_data, self.v_data, self.k_scale, self.v_scale, self.k_global, self.v_global))
        if not used_only:
            return total
        return total * (self.num_pages - self.free_pages) // self.num_pages

    def check_invariants(self) -> None:
        """Every page is free or owned by exactly one sequence; fills fit their pages."""
        owned = [p for s in self._seqs.values() for p in s.pages]
        assert len(owned) == len(set(owned)), "a page is owned twice"
        assert not set(owned) & set(self._free), "a page is both free and owned"
        assert len(owned) + len(self._free) == self.num_pages, "a page leaked"
        for s in self._seqs.values():
            assert len(s.fill) == len(s.pages) and all(0 < f <= self.page_size for f in s.fill)
            assert s.sink_pages <= len(s.pages)

    # ---- writes ------------------------------------------------------------------------------
    def _check_kv(self, k: torch.Tensor, v: torch.Tensor) -> None:
        want = (self.num_heads, self.head_dim)
        if k.dim() != 3 or tuple(k.shape[1:]) != want or k.shape != v.shape:
            raise ValueError(f"k, v: expected equal shapes [tokens, {want[0]}, {want[1]}], got "
                             f"{tuple(k.shape)} and {tuple(v.shape)}")
        if k.shape[0] == 0:
            raise ValueError("k, v: expected at least one token")

    def _write(self, pages: list[int], k: torch.Tensor, v: torch.Tensor) -> list[int]:
        """Quantize the chunk (one FP32 scale per head) and store it from the start of ``pages``;
        returns the tokens put on each page. The slots past the chunk's end on its last page are
        zeroed (they are past the page's fill, so nothing reads them)."""
        tokens, size = k.shape[0], self.page_size
        padded = len(pages) * size
        index = torch.tensor(pages, dtype=torch.long, device=self.k_data.device)
        for which, x in (("k", k), ("v", v)):
            # one FP32 scale per head over the whole chunk: heads first, each its own slice
            data, scale, glob = quantize_slices(x.transpose(0, 1))  # [H, T, D/2], [H, T, D/16], [H]
            for name, t in (("data", data), ("scale", scale)):
                t = torch.nn.functional.pad(t.view(torch.uint8), (0, 0, 0, padded - tokens))  # [H, pages*S, .]
                store = getattr(self, f"{which}_{name}")
                store.view(torch.uint8)[index] = t.unflatten(1, (len(pages), size)).permute(1, 2, 0, 3).to(store.device)
            getattr(self, f"{which}_global")[index] = glob.to(self.k_global.device)
        return [min(size, tokens - i * size) for i in range(len(pages))]

    def append(self, seq: int, k: torch.Tensor, v: torch.Tensor, *, sink: bool = False) -> None:
        """Store a chunk of ``k``, ``v`` ([tokens, heads, head_dim]) at the end of ``seq``.

        ``sink=True`` (only for a sequence's first chunk) makes these pages the frame sink.
        Evicts old window pages first if ``window_tokens`` is set; raises :class:`CacheFullError`
        (changing nothing) if the pages cannot be found.
        """
        state = self._get(seq)
        self._check_kv(k, v)
        if sink and state.pages:
            raise ValueError("sink: only the first chunk of a sequence can be the sink")
        needed = -(-k.shape[0] // self.page_size)
        evict = 0 if sink else self._pages_to_evict(state, k.shape[0])
        if needed > self.free_pages + evict:
            raise CacheFullError(f"append: {needed} pages needed for {k.shape[0]} tokens, "
                                 f"{self.free_pages} free (+{evict} evictable)")
        self._tables.clear()
        self._evict(state, evict)
        pages = [self._free.pop() for _ in range(needed)]
        fills = self._write(pages, k, v)
        state.pages += pages
        state.fill += fills
        if sink:
            state.sink_pages = len(state.pages)

    def _pages_to_evict(self, state: _Sequence, incoming: int) -> int:
        """Oldest non-sink pages to drop so the window holds the incoming tokens too."""
        if self.window_tokens is None:
            return 0
        window = state.fill[state.sink_pages:]
        total = sum(window) + incoming
        count = 0
        while count < len(window) and total > self.window_tokens:
            total -= window[count]
            count += 1
        return count

    def _evict(self, state: _Sequence, count: int) -> None:
        first = state.sink_pages
        dropped = state.pages[first: first + count]
        state.evicted_tokens += sum(state.fill[first: first + count])
        del state.pages[first: first + count], state.fill[first: first + count]
        self._free.extend(reversed(dropped))

    def rewrite(self, seq: int, start_token: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Re-quantize stored tokens ``start_token ..`` of ``seq`` (indices into what is stored now)
        with new K/V, in place. ``start_token`` must begin a page and the range must end at the end
        of a page or of the sequence, so each page keeps a single FP32 scale per head."""
        state = self._get(seq)
        self._check_kv(k, v)
        starts = [sum(state.fill[:i]) for i in range(len(state.fill))]
        if start_token not in starts:
            raise ValueError(f"start_token: {start_token} does not begin a page of sequence {seq}")
        first = starts.index(start_token)
        end = start_token + k.shape[0]
        ends = [s + f for s, f in zip(starts, state.fill)]
        if end not in ends:
            raise ValueError(f"k, v: the range {start_token}..{end} does not end at a page boundary")
        last = ends.index(end)
        if any(f != self.page_size for f in state.fill[first:last]):
            raise ValueError("k, v: the range spans a partly filled page that is not its last")
        self._write(state.pages[first: last + 1], k, v)

    def drop(self, seq: int, start: int, tokens: int) -> None:
        """Free the pages holding stored tokens ``start .. start + tokens`` of ``seq``; the tokens
        after them move up (a dense cache rolled by a copy, LongLive's way of keeping a sink and a
        window). Both ends must be page boundaries, and the sink stays whole."""
        state = self._get(seq)
        ends = [0] + [sum(state.fill[: i + 1]) for i in range(len(state.fill))]
        if start not in ends or start + tokens not in ends:
            raise ValueError(f"start, tokens: {start}..{start + tokens} are not page boundaries of sequence {seq} "
                             f"(page ends: {ends[1:]})")
        first, last = ends.index(start), ends.index(start + tokens)
        if first < state.sink_pages and last > first:
            raise ValueError(f"start: dropping tokens {start}..{start + tokens} of sequence {seq} would cut into its sink")
        dropped = state.pages[first:last]
        self._tables.clear()
        state.evicted_tokens += tokens
        del state.pages[first:last], state.fill[first:last]
        self._free.extend(reversed(dropped))

    def truncate(self, seq: int, tokens: int) -> None:
        """Keep the first ``tokens`` stored tokens of ``seq`` and free the pages after them; ``tokens``
        must end a page (appends start on fresh pages, so every append boundary does) and keep the
        sink whole."""
        state = self._get(seq)
        ends = [sum(state.fill[: i + 1]) for i in range(len(state.fill))]
        if tokens not in [0] + ends:
            raise ValueError(f"tokens: {tokens} does not end a page of sequence {seq} (page ends: {ends})")
        keep = ([0] + ends).index(tokens)
        if keep < state.sink_pages:
            raise ValueError(f"tokens: truncating sequence {seq} to {tokens} would cut into its sink")
        dropped = state.pages[keep:]
        self._tables.clear()
        del state.pages[keep:], state.fill[keep:]
        self._free.extend(reversed(dropped))

    # ---- reads -------------------------------------------------------------------------------
    def dequantize_pages(self, pages: torch.Tensor, which: str) -> torch.Tensor:
        """fp32 [len(pages), S, H, D] of K or V on physical ``pages`` (a tile, as a kernel reads it)."""
        data, scale, glob = (getattr(self, f"{which}_{n}")[pages] for n in ("data", "scale", "global"))
        values = e2m1_decode(unpack_nibbles(data)).unflatten(-1, (-1, 16))
        values = values * scale.float().unsqueeze(-1)
        return values.flatten(-2) * glob[:, None, :, None]

    def gather(self, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized (K, V), each fp32 [tokens, heads, head_dim], in logical order."""
        state = self._get(seq)
        pages = torch.tensor(state.pages, dtype=torch.long, device=self.k_data.device)
        out = []
        for which in ("k", "v"):
            tiles = self.dequantize_pages(pages, which)
            out.append(torch.cat([tiles[i, :f] for i, f in enumerate(state.fill)]) if state.pages
                       else tiles.new_zeros(0, self.num_heads, self.head_dim))
        return out[0], out[1]
