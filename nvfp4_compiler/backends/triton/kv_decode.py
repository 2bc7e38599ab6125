"""Decode a sequence's NVFP4 KV pages into one contiguous fp16/bf16 tensor, then flash SDPA.

The "scratch" route for chunk-sized queries. On Hopper the in-register kernel
(``attention.py``) cannot overlap its K/V decode with the tensor cores: a decoded tile is a
register value, so Triton stages it through shared memory and waits on every wgmma. For a chunk
of thousands of queries, attention is compute-bound and a dense flash kernel is ~3x faster, so
decoding the cache once per call (a bandwidth-bound pass: NVFP4 bytes in, 16-bit values out)
and handing it to PyTorch's flash SDPA wins. The cache stays NVFP4 at rest; the scratch lives
for one call, so it costs one layer's bf16 K/V of transient memory, not the whole model's cache.

This is LongLive-2.0's "dequantize, then SDPA", made cheap: one Triton launch per K and V
instead of PyTorch's gather/lookup/multiply sequence (~2 ms at Wan-1.3B, bench_attention).

    pages -> out [B, T_cache + Tn, H, D]: page i of row b lands at tokens starts[b, i] ...
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .numerics import DECODED_TILE_UNSCALE, decode_nvfp4_tile, to_bf16_rne


@triton.jit
def decode_pages_kernel(data_ptr, scale_ptr, global_ptr, table_ptr, fills_ptr, starts_ptr, out_ptr,
                        MAX_PAGES, H, s_ob, s_ot,
                        D: tl.constexpr, S: tl.constexpr, BLOCK_R: tl.constexpr):
    """Program (i, b, r): rows r*BLOCK_R.. of page table[b, i] (a row = one token of one head)."""
    i, b, r = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    fill = tl.load(fills_ptr + b * MAX_PAGES + i)
    if r * BLOCK_R < fill * H:
        page = tl.load(table_ptr + b * MAX_PAGES + i).to(tl.int64)
        rows = r * BLOCK_R + tl.arange(0, BLOCK_R)                       # token * H + head on the page
        ok = rows < fill * H
        src = page * S * H + rows
        packed = tl.load(data_ptr + src[:, None] * (D // 2) + tl.arange(0, D // 2)[None, :], mask=ok[:, None], other=0)
        bits = tl.load(scale_ptr + src[:, None] * (D // 16) + tl.arange(0, D // 16)[None, :],
                       mask=ok[:, None], other=0).to(tl.int32)
        even, odd = decode_nvfp4_tile(packed, bits)                      # exact, 2^-7 x value
        # one fp32 rounding, as the reference's (E2M1 x E4M3) x global: the 2^7 is exact
        glob = tl.load(global_ptr + page * H + rows % H, mask=ok, other=0.0) * DECODED_TILE_UNSCALE
        even = even.to(tl.float32) * glob[:, None]
        odd = odd.to(tl.float32) * glob[:, None]
        values = tl.reshape(tl.join(even, odd), (BLOCK_R, D))            # element 2j, 2j+1 of byte j
        start = tl.load(starts_ptr + b * MAX_PAGES + i)
        dst = out_ptr + b.to(tl.int64) * s_ob + (start + rows // H).to(tl.int64)[:, None] * s_ot \
            + (rows % H)[:, None] * D + tl.arange(0, D)[None, :]
        if out_ptr.dtype.element_ty == tl.bfloat16:
            values = to_bf16_rne(values)  # the interpreter's own conversion truncates
        tl.store(dst, values.to(out_ptr.dtype.element_ty), mask=ok[:, None])


def page_starts(fills: torch.Tensor) -> torch.Tensor:
    """Token position of each page's first token within its row (exclusive prefix sum of fills)."""
    return (torch.cumsum(fills, 1, dtype=torch.int32) - fills).contiguous()


def decode_pages(data, scale, glob, table, fills, total_tokens: int, dtype: torch.dtype,
                 extra_tokens: int = 0, starts: torch.Tensor | None = None) -> torch.Tensor:
    """[B, total_tokens + extra_tokens, H, D] ``dtype``: the pages of each row of ``table`` in
    order, ``fills`` tokens each; every row must hold ``total_tokens`` (the last ``extra_tokens``
    are left for the caller to fill). ``starts``: ``page_starts(fills)``, if already at hand."""
    b = table.shape[0]
    _, page_size, h, half = data.shape
    d = 2 * half
    out = torch.empty(b, total_tokens + extra_tokens, h, d, device=data.device, dtype=dtype)
    if table.shape[1] == 0 or total_tokens == 0:
        return out
    starts = page_starts(fills) if starts is None else starts
    block_r = 64
    grid = (table.shape[1], b, triton.cdiv(page_size * h, block_r))
    decode_pages_kernel[grid](data, scale.view(torch.uint8), glob, table, fills, starts, out,
                              table.shape[1], h, out.stride(0), out.stride(1),
                              D=d, S=page_size, BLOCK_R=block_r)
    return out


def scratch_attention(q, k_data, k_scale, k_global, v_data, v_scale, v_global, table, fills, total_tokens: int,
                      k_new=None, v_new=None, scale: float | None = None) -> torch.Tensor:
    """Attention of ``q`` [B, Tq, H, D] over ``total_tokens`` cached tokens per row (+ k/v_new):
    decode to a ``q.dtype`` scratch, append the fresh K/V, flash SDPA. Same contract as
    ``attention.paged_attention`` when every row holds ``total_tokens``."""
    tn = 0 if k_new is None else k_new.shape[1]
    starts = page_starts(fills)  # shared by the K and V passes
    kv = []
    for data, sc, glob, new in ((k_data, k_scale, k_global, k_new), (v_data, v_scale, v_global, v_new)):
        t = decode_pages(data, sc, glob, table, fills, total_tokens, q.dtype, tn, starts)
        if tn:
            t[:, total_tokens:] = new
        kv.append(t.transpose(1, 2))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = F.scaled_dot_product_attention(q.transpose(1, 2), kv[0], kv[1], scale=scale)
    return out.transpose(1, 2)
