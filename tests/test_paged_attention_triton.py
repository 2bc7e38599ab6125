"""The Triton paged NVFP4 attention kernel against the reference (SDPA over the dequantized cache).

On CPU it runs under TRITON_INTERPRET=1 at small shapes; with NVFP4_TEST_ON_GPU=1 compiled, plus
LongLive-sized shapes. The kernel rounds q and the softmax weights P to fp16 for the tensor-core
dots (as FlashAttention does; K/V decode to fp16 exactly), so outputs are compared with the fp32
reference within P's rounding: 3e-3 absolute, 1e-2 relative.
"""

import os

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kv_guards import nan_guarded_scales
from nvfp4_compiler.backends.triton import attention as tattn
from nvfp4_compiler.backends.triton.attention_decode import block_dots, fixed24_blocks, fixed24_words
from nvfp4_compiler.kv_cache import PagedNVFP4Cache
from nvfp4_compiler.paged_attention import paged_attention

ON_GPU = os.environ.get("NVFP4_TEST_ON_GPU") == "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
if ON_GPU and not torch.cuda.is_available():
    # asked for GPU tests where there is no GPU: a setup error, not something to skip quietly
    raise RuntimeError("NVFP4_TEST_ON_GPU=1 asks for the GPU tests, but torch sees no CUDA device")


def _cache(page, heads, dim, chunks, window, seqs=2, seed=0):
    """Sequences with a sink chunk and rolling-window chunks of uneven sizes (partly filled pages)."""
    gen = torch.Generator().manual_seed(seed)
    pages = seqs * sum(-(-t // page) for t in chunks)
    cache = PagedNVFP4Cache(pages, page, heads, dim, window_tokens=window, device=DEVICE)
    for seq in range(seqs):
        cache.add_sequence(seq)
        for i, tokens in enumerate(chunks):
            k, v = (torch.randn(tokens, heads, dim, generator=gen) * 3 for _ in range(2))
            cache.append(seq, k.to(DEVICE), v.to(DEVICE), sink=i == 0)
    return cache


def _reference(q, cache, seqs, k_new, v_new):
    out = []
    for row, seq in enumerate(seqs):
        k, v = cache.gather(seq)
        if k_new is not None:
            k, v = torch.cat([k, k_new[row].float()]), torch.cat([v, v_new[row].float()])
        o = F.scaled_dot_product_attention(q[row].float().transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
        out.append(o.transpose(0, 1))
    return torch.stack(out)


CASES = [  # page, heads, dim, chunks (first = sink), window, Tq, Tn
    (16, 2, 32, (20, 7, 33, 16), 48, 5, 0),
    (16, 2, 32, (16, 40), None, 40, 9),
    (32, 1, 64, (3, 50, 50), 64, 17, 4),
]
if ON_GPU:
    CASES += [(64, 12, 128, (1560, 1560, 1560, 1560), 4680, 4680, 1560),   # prefill, chunked
              (64, 12, 128, (4680, 4680, 4680), 9360, 16, 0)]               # decode-sized queries


@pytest.mark.parametrize("page,heads,dim,chunks,window,tq,tn", CASES)
@pytest.mark.parametrize("splits", [None, 3])
def test_triton_paged_attention_matches_reference(page, heads, dim, chunks, window, tq, tn, splits):
    cache = _cache(page, heads, dim, chunks, window)
    gen = torch.Generator().manual_seed(1)
    dtype = torch.bfloat16 if ON_GPU else torch.float16
    q = torch.randn(2, tq, heads, dim, generator=gen).to(DEVICE, dtype)
    k_new = v_new = None
    if tn:
        k_new, v_new = (torch.randn(2, tn, heads, dim, generator=gen).to(DEVICE, dtype) for _ in range(2))
    table, fills, npages = cache.page_tables([0, 1])
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    tattn.paged_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                          cache.v_global, table, fills, npages, k_new, v_new, splits=splits, out=out)
    want = _reference(q, cache, [0, 1], k_new, v_new)
    assert not out.isnan().any()
    # fp16 q (exact for bf16 inputs) and fp16 P: P's rounding (2^-11 relative) bounds the error
    torch.testing.assert_close(out.float(), want, atol=3e-3, rtol=1e-2)


def test_fresh_kv_with_different_strides():
    """k_new and v_new as a model hands them over: views of [B, H, T, D] tensors, each its own layout."""
    cache = _cache(16, 2, 32, (20, 9), None)
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 2, 6, 32, generator=gen).to(DEVICE, torch.float16).transpose(1, 2)
    k_new = torch.randn(2, 2, 5, 32, generator=gen).to(DEVICE, torch.float16).transpose(1, 2)  # [B, T, H, D] view
    v_new = torch.randn(2, 5, 2, 32, generator=gen).to(DEVICE, torch.float16)                  # contiguous
    table, fills, npages = cache.page_tables([0, 1])
    out = tattn.paged_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                                cache.v_global, table, fills, npages, k_new, v_new)
    want = _reference(q, cache, [0, 1], k_new, v_new)
    torch.testing.assert_close(out.float(), want, atol=3e-3, rtol=1e-2)


def test_dispatch_and_errors():
    cache = _cache(16, 2, 32, (20, 9), None)
    q = torch.randn(2, 3, 2, 32, device=DEVICE, dtype=torch.float16)
    via_dispatch = paged_attention(q, cache, [0, 1], backend="triton")
    reference = paged_attention(q.float(), cache, [0, 1], backend="reference")
    torch.testing.assert_close(via_dispatch.float(), reference, atol=3e-3, rtol=1e-2)
    with pytest.raises(ValueError, match="backend"):
        paged_attention(q, cache, [0, 1], backend="cuda")
    with pytest.raises(ValueError, match="k_new, v_new"):
        paged_attention(q, cache, [0, 1], k_new=torch.randn(2, 4, 2, 32, device=DEVICE))
    odd = PagedNVFP4Cache(8, 12, 2, 32, device=DEVICE)  # page size 12: not for the kernel
    odd.add_sequence(0)
    odd.append(0, torch.randn(5, 2, 32, device=DEVICE), torch.randn(5, 2, 32, device=DEVICE))
    with pytest.raises(ValueError, match="page_size"):
        paged_attention(q[:1], odd, [0], backend="triton")
    assert paged_attention(q[:1].float(), odd, [0]).shape == (1, 3, 2, 32)  # auto falls back


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_pages_equals_gather(dtype):
    """The scratch decode is the reference dequantization rounded once to ``dtype``, bit for bit,
    with every token of every (unevenly filled) page in logical order."""
    from nvfp4_compiler.backends.triton.kv_decode import decode_pages

    cache = _cache(16, 3, 32, (20, 7, 33, 16), 48)
    # every byte (all 16 x 16 nibble pairs) and every finite non-negative E4M3 scale, subnormals too
    cache.k_data.copy_((torch.arange(cache.k_data.numel()) % 256).view(cache.k_data.shape).to(torch.uint8))
    scale_bits = (torch.arange(cache.k_scale.numel()) * 7 % 127).view(cache.k_scale.shape).to(torch.uint8)
    cache.k_scale.copy_(scale_bits.view(cache.k_scale.dtype))
    table, fills, _ = cache.page_tables([0, 1])
    total = cache.length(0)
    for which in ("k", "v"):
        data, scale, glob = (getattr(cache, f"{which}_{n}") for n in ("data", "scale", "global"))
        out = decode_pages(data, scale, glob, table, fills, total, dtype, extra_tokens=3)
        for row in (0, 1):
            want = cache.gather(row)[0 if which == "k" else 1].to(dtype)
            assert torch.equal(out[row, :total], want)


@pytest.mark.parametrize("tn", [0, 6])
def test_scratch_strategy_matches_reference(tn):
    cache = _cache(16, 2, 32, (20, 7, 33), 48)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 9, 2, 32, generator=gen).to(DEVICE, torch.float16)
    k_new = v_new = None
    if tn:
        k_new, v_new = (torch.randn(2, tn, 2, 32, generator=gen).to(DEVICE, torch.float16) for _ in range(2))
    out = paged_attention(q, cache, [0, 1], k_new, v_new, backend="triton", strategy="scratch")
    want = _reference(q, cache, [0, 1], k_new, v_new)
    # K/V rounded to fp16 once (2^-11 relative), as the in-register kernel rounds P
    torch.testing.assert_close(out.float(), want, atol=3e-3, rtol=1e-2)


def test_scratch_strategy_refuses_what_it_cannot_do():
    cache = _cache(16, 2, 32, (20, 9), None)
    q = torch.randn(2, 3, 2, 32, device=DEVICE, dtype=torch.float16)
    with pytest.raises(ValueError, match="strategy"):
        paged_attention(q, cache, [0, 1], backend="triton", strategy="dense")
    with pytest.raises(ValueError, match="fp16/bf16"):
        paged_attention(q.float(), cache, [0, 1], backend="triton", strategy="scratch")
    cache.grow(1)
    cache.append(1, torch.randn(4, 2, 32, device=DEVICE), torch.randn(4, 2, 32, device=DEVICE))
    with pytest.raises(ValueError, match="different token counts"):
        paged_attention(q, cache, [0, 1], backend="triton", strategy="scratch")
    # auto: uneven sequences take the in-register kernel instead
    out = paged_attention(q, cache, [0, 1], backend="triton")
    torch.testing.assert_close(out.float(), _reference(q, cache, [0, 1], None, None), atol=3e-3, rtol=1e-2)


def test_auto_strategy_takes_scratch_for_many_queries(monkeypatch):
    """auto: the scratch route from SCRATCH_MIN_QUERIES queries (or SCRATCH_MIN_FRESH fresh tokens)
    on, the in-register kernel below; both agree with the reference."""
    import nvfp4_compiler.paged_attention as pa
    from nvfp4_compiler.backends.triton import kv_decode

    monkeypatch.setattr(pa, "SCRATCH_MIN_QUERIES", 8)
    monkeypatch.setattr(pa, "SCRATCH_MIN_FRESH", 6)
    gen = torch.Generator().manual_seed(4)
    fresh = tuple(torch.randn(2, 6, 2, 32, generator=gen).to(DEVICE, torch.float16) for _ in range(2))
    _assert_routes(monkeypatch, kv_decode, "scratch_attention", gen,
                   [(7, None, False), (8, None, True), (3, fresh, True)])


def _assert_routes(monkeypatch, module, kernel: str, gen, cases):
    """For each (queries, fresh K/V or None, expected): ``paged_attention`` calls ``module.kernel``
    exactly when expected, and its output agrees with the reference."""
    calls = []
    real = getattr(module, kernel)
    monkeypatch.setattr(module, kernel, lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = _cache(16, 2, 32, (20, 9), None)
    for tq, fresh, want_call in cases:
        q = torch.randn(2, tq, 2, 32, generator=gen).to(DEVICE, torch.float16)
        calls.clear()
        out = paged_attention(q, cache, [0, 1], *(fresh or (None, None)), backend="triton")
        assert bool(calls) == want_call, (tq, fresh is not None)
        torch.testing.assert_close(out.float(), _reference(q, cache, [0, 1], *(fresh or (None, None))),
                                   atol=3e-3, rtol=1e-2)


@pytest.mark.parametrize("tile", [(8, 16, 4, 1), (16, 24, 4, 1), (16, 32, 4, 1), (16, 16, 3, 1), (16, 16, 4, 0)])
def test_bad_tile_names_the_argument(tile):
    cache = _cache(16, 2, 32, (20, 9), None)  # page size 16: BLOCK_N 32 does not divide it
    q = torch.randn(2, 3, 2, 32, device=DEVICE, dtype=torch.float16)
    table, fills, npages = cache.page_tables([0, 1])
    with pytest.raises(ValueError, match="tile"):
        tattn.paged_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                              cache.v_global, table, fills, npages, tile=tile)


@pytest.mark.parametrize("page,tile,splits", [(64, (16, 32, 4, 1), 2), (64, (64, 64, 4, 1), 2), (16, None, 64),
                                             (16, None, 150)])
def test_split_combine(page, tile, splits):
    """Partials of 2, 64 or 150 page splits merged by ``combine_splits_kernel`` (64: one full block
    of SPLIT_BLOCK partials; 150: three blocks, the running max carried across them; both with
    empty splits), with sub-page and whole-page tiles."""
    cache = _cache(page, 2, 64, (100, 29, 70, 300, 200), 600)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, 2, 64, generator=gen).to(DEVICE, torch.float16)
    table, fills, npages = cache.page_tables([0, 1])
    out = torch.full_like(q, float("nan"))
    tattn.paged_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                          cache.v_global, table, fills, npages, splits=splits, tile=tile, out=out)
    torch.testing.assert_close(out.float(), _reference(q, cache, [0, 1], None, None), atol=3e-3, rtol=1e-2)


def test_split_count_fills_whole_waves_of_sms(monkeypatch):
    """choose_splits rounds the page split up (to at most twice the traffic-bounded count) so that
    programs x splits fills whole waves of a 132-SM GPU: Tq = 64 at the Wan caches (366 and 550
    pages, 12 and 24 heads) takes 22 splits, the H100 sweeps' best (12 and 19 before); Tq = 16 was
    whole waves already; a short cache doubles at most; enough programs never split."""
    monkeypatch.setattr(tattn, "_num_sms", lambda device: 132)
    cases = {(64, 12, 366): 22, (64, 24, 550): 22, (16, 12, 366): 44, (16, 24, 550): 22, (64, 12, 40): 2,
             (64, 132, 366): 1}
    for (tq, programs, pages), want in cases.items():
        assert tattn.choose_splits(programs, pages, DEVICE, tq) == want, (tq, programs, pages)


# --- the CUDA-core decode kernel (attention_decode.py): one query per program, fp32 dot products

DECODE_CASES = [  # page, heads, dim, chunks (first = sink), window, Tq
    (16, 2, 32, (20, 7, 33, 16), 48, 3),
    (32, 1, 64, (3, 50, 50), 64, 1),
]
if ON_GPU:
    DECODE_CASES += [(64, 12, 128, (4680, 4680, 4680), 9360, 1), (64, 12, 128, (4680, 4680, 4680), 9360, 4)]


@pytest.mark.parametrize("page,heads,dim,chunks,window,tq", DECODE_CASES)
@pytest.mark.parametrize("splits", [None, 1, 3, 64])
def test_decode_kernel_matches_reference(page, heads, dim, chunks, window, tq, splits):
    """fp32 q and output: equal to SDPA over the dequantized cache within fp32 accumulation order
    (K/V decode exactly; nothing is rounded to fp16). 64 splits leave some splits empty."""
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    cache = _cache(page, heads, dim, chunks, window)
    q = torch.randn(2, tq, heads, dim, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    table, fills, npages = cache.page_tables([0, 1])
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    paged_decode_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                           cache.v_global, table, fills, npages, splits=splits, out=out)
    assert not out.isnan().any()
    torch.testing.assert_close(out, _reference(q, cache, [0, 1], None, None), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("ahead,staged", [(2, False), (1, True), (3, True)])
@pytest.mark.parametrize("page,heads,dim,chunks,window,tq", DECODE_CASES[1:])
def test_decode_kernel_loads_ahead_give_the_same_bits(page, heads, dim, chunks, window, tq, ahead, staged):
    """Issuing each tile's loads more tiles ahead, in registers or staged through shared memory
    (cp.async), changes when the bytes arrive, not what is computed: the outputs are bit-identical
    to one tile ahead in registers, the last tiles of each split included (they load past the
    split's end, masked)."""
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    cache = _cache(page, heads, dim, chunks, window)
    q = torch.randn(2, tq, heads, dim, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    args = (cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale, cache.v_global,
            *cache.page_tables([0, 1]))
    for splits in (1, 3):
        one = paged_decode_attention(q, *args, splits=splits, ahead=1)
        other = paged_decode_attention(q, *args, splits=splits, ahead=ahead, staged=staged)
        assert not other.isnan().any() and torch.equal(one, other)


def test_decode_kernel_rejects_more_tiles_ahead_than_it_holds():
    from nvfp4_compiler.backends.triton.attention_decode import MAX_STAGED_AHEAD, paged_decode_attention

    cache = _cache(16, 1, 32, (20,), None)
    args = (torch.zeros(1, 1, 1, 32, device=DEVICE), cache.k_data, cache.k_scale, cache.k_global, cache.v_data,
            cache.v_scale, cache.v_global, *cache.page_tables([0]))
    for ahead, staged in ((3, False), (0, False), (MAX_STAGED_AHEAD + 1, True), (1.0, True)):
        with pytest.raises(ValueError, match="ahead: expected 1 to"):
            paged_decode_attention(*args, ahead=ahead, staged=staged)


def test_staged_decode_kernel_copies_the_page_bytes_with_cp_async_on_sm90():
    """Without a GPU: compiled for sm_90 as launched, the staged kernel's page loads become 16-byte
    cp.async copies into shared memory (Triton pipelines a loop without a tl.dot only when tl.range
    asks for stages), while the register version has none; neither spills."""
    from sm90_compile import compile_for_sm90

    types = {"q_ptr": "*bf16", "out_ptr": "*bf16", "kd_ptr": "*i64", "kg_ptr": "*fp32", "vg_ptr": "*fp32",
             "table_ptr": "*i32", "fills_ptr": "*i32", "npages_ptr": "*i32", "ws_m_ptr": "*fp32", "ws_l_ptr": "*fp32",
             "ws_acc_ptr": "*fp32", "tickets_ptr": "*i32", "qk_scale": "fp32"}
    kernel = "nvfp4_compiler.backends.triton.attention_decode:paged_decode_kernel"
    for staged in (True, False):
        consts = dict(D=128, S=64, BLOCK_N=32, SPLIT=True, SPLIT_BLOCK=64, AHEAD=3 if staged else 1, STAGED=staged)
        ptx, info = compile_for_sm90(kernel, consts, {"num_warps": 2, "num_stages": 1}, types)
        copies = ptx.count("cp.async.cg.shared.global")   # 16-byte copies: the K and V page bytes
        # four 16-byte copies per thread and tile at this tile (72 bytes of K, V and their scales)
        assert (copies >= 4 * (3 + 1) and "cp.async.wait_group" in ptx) if staged else copies == 0, (staged, copies)
        assert "STACK:0" in info and ".local" not in ptx, info


@triton.jit
def _fixed24_dot_kernel(q_ptr, blocks_ptr, x_ptr, steps_ptr, dots_ptr, NB: tl.constexpr, ROWS: tl.constexpr):
    steps, x = fixed24_blocks(tl.load(q_ptr + tl.arange(0, NB * 16)), NB)
    cols = tl.arange(0, NB)
    blocks = tl.load(blocks_ptr + tl.arange(0, ROWS)[:, None] * NB + cols[None, :])
    tl.store(x_ptr + tl.arange(0, NB)[:, None] * 16 + tl.arange(0, 16)[None, :], x)
    tl.store(steps_ptr + cols, steps)
    tl.store(dots_ptr + tl.arange(0, ROWS)[:, None] * NB + cols[None, :], block_dots(blocks, fixed24_words(x, NB)))


def test_decode_kernel_q_dot_is_exact_in_integers():
    """The single-query kernel's q.k: q as 24-bit integers per 16-block (within 1.5 steps of q,
    a step being 2^-23 of the block's max), and each block's dot product with the K codes equal,
    as an integer, to sum_j (2 x E2M1 code_j) x_j computed here in int64 (on the GPU: the byte
    planes and dp4a of the PTX). Blocks of one scale include zeros, tiny and huge values."""
    nb, rows = 8, 16
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(nb, 16, generator=gen) * torch.logspace(-20, 20, nb)[:, None]
    q[1] = 0.0
    q[2, :8] = 0.0
    q[3, 0] = -q[3].abs().max() * 1.5                                  # the block's max is negative
    codes = torch.randint(0, 16, (rows, nb, 16), generator=gen)
    codes[0] = 7                                                        # every code at +6 ...
    codes[1] = 15                                                       # ... and at -6
    blocks = (codes.long() << (4 * torch.arange(16))).sum(-1)           # code j in bits 4j..4j+3
    x = torch.zeros(nb, 16, dtype=torch.int32, device=DEVICE)
    steps = torch.zeros(nb, device=DEVICE)
    dots = torch.zeros(rows, nb, dtype=torch.int32, device=DEVICE)
    _fixed24_dot_kernel[(1,)](q.flatten().to(DEVICE), blocks.to(DEVICE), x, steps, dots, NB=nb, ROWS=rows)
    x, steps, dots = x.cpu().long(), steps.cpu().double(), dots.cpu().long()
    assert x.abs().max() <= 2 ** 23 - 1
    assert torch.all(x.abs().amax(1)[[0, 2, 3]] >= 2 ** 23 - 2)     # each block's max uses all 24 bits
    assert torch.equal(x[1], torch.zeros(16, dtype=torch.long))
    # half a step of rounding to integers, plus about half a step each from q / step and from the
    # step's own fp32 rounding (relative 2^-24 times |x| < 2^23): 1.5 steps at most
    assert torch.all((q.double() - steps[:, None] * x).abs() <= 1.5 * steps[:, None])
    magnitude = torch.tensor([0, 1, 2, 3, 4, 6, 8, 12])
    doubled = torch.where(codes >= 8, -magnitude[codes & 7], magnitude[codes & 7])
    assert torch.equal(dots, (doubled * x[None]).sum(-1))


def test_decode_kernel_rescales_when_the_max_jumps():
    """Keys whose scores grow chunk by chunk (by far more than 2^8 in the softmax weights), so the
    lazily rescaled state must move its reference max inside one split and across splits."""
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    gen = torch.Generator().manual_seed(9)
    cache = PagedNVFP4Cache(40, 16, 2, 32, device=DEVICE)
    cache.add_sequence(0)
    q = torch.randn(1, 2, 2, 32, generator=gen)
    for growth in (0.5, 2.0, 8.0, 1.0):  # the last chunk falls back below the max
        k = q[0, :1].expand(40, 2, 32) * growth + torch.randn(40, 2, 32, generator=gen)
        cache.append(0, k.contiguous().to(DEVICE), torch.randn(40, 2, 32, generator=gen).to(DEVICE))
    q = q.to(DEVICE)
    table, fills, npages = cache.page_tables([0])
    want = _reference(q, cache, [0], None, None)
    for splits in (1, 2, 5):
        out = paged_decode_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                                     cache.v_global, table, fills, npages, splits=splits)
        torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)


def test_decode_kernel_rounds_output_once_to_q_dtype():
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    cache = _cache(16, 2, 32, (20, 7, 33), 48)
    q32 = torch.randn(2, 2, 2, 32, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    q16 = q32.half()
    table, fills, npages = cache.page_tables([0, 1])
    args = (cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale, cache.v_global, table, fills, npages)
    out16 = paged_decode_attention(q16, *args, splits=2)
    want = paged_decode_attention(q16.float(), *args, splits=2)  # same inputs, fp32 out
    assert out16.dtype == torch.float16
    assert torch.equal(out16, want.half())


@pytest.mark.parametrize("tile", [(24, 1), (32, 1), (16, 3), (16,), "16x1"])
def test_decode_kernel_bad_tile_names_the_argument(tile):
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    cache = _cache(16, 2, 32, (20, 9), None)  # page size 16: BLOCK_N 32 does not divide it
    q = torch.randn(2, 1, 2, 32, device=DEVICE)
    table, fills, npages = cache.page_tables([0, 1])
    with pytest.raises(ValueError, match="tile"):
        paged_decode_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                               cache.v_global, table, fills, npages, tile=tile)


def test_decode_kernel_refuses_geometry_it_cannot_tile():
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    odd = PagedNVFP4Cache(8, 12, 2, 32, device=DEVICE)  # page size 12: not a power of two
    odd.add_sequence(0)
    odd.append(0, torch.randn(5, 2, 32, device=DEVICE), torch.randn(5, 2, 32, device=DEVICE))
    table, fills, npages = odd.page_tables([0])
    with pytest.raises(ValueError, match="page_size"):
        paged_decode_attention(torch.randn(1, 1, 2, 32, device=DEVICE), odd.k_data, odd.k_scale, odd.k_global,
                               odd.v_data, odd.v_scale, odd.v_global, table, fills, npages)


def test_dispatch_takes_decode_kernel_for_few_queries_without_fresh_kv(monkeypatch):
    import nvfp4_compiler.paged_attention as pa
    from nvfp4_compiler.backends.triton import attention_decode

    gen = torch.Generator().manual_seed(8)
    fresh = tuple(torch.randn(2, 3, 2, 32, generator=gen).to(DEVICE, torch.float16) for _ in range(2))
    _assert_routes(monkeypatch, attention_decode, "paged_decode_attention", gen,
                   [(pa.VECTOR_MAX_QUERIES, None, True), (pa.VECTOR_MAX_QUERIES + 1, None, False), (1, fresh, False)])


def test_decode_kernel_merges_splits_itself_and_leaves_tickets_zero():
    """The last split program of each query and head merges the partials (an atomic ticket per
    query and head; the module launches no combine kernel): tickets are back at zero after every
    call, so a second call with other queries over the same persistent tickets is right too."""
    from nvfp4_compiler.backends.triton import attention_decode as tdecode

    cache = _cache(16, 2, 32, (20, 7, 33, 16), None)
    table, fills, npages = cache.page_tables([0, 1])
    for seed in (7, 8):
        q = torch.randn(2, 3, 2, 32, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
        out = torch.full_like(q, float("nan"))  # poisoned: the merge must write every element
        tdecode.paged_decode_attention(q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data,
                                       cache.v_scale, cache.v_global, table, fills, npages, splits=3, out=out)
        torch.testing.assert_close(out, _reference(q, cache, [0, 1], None, None), atol=2e-5, rtol=1e-4)
        assert torch.count_nonzero(tdecode.combine_tickets(q.device, 2 * 3 * 2)) == 0


@pytest.mark.parametrize("tq", [1, 5])
@pytest.mark.parametrize("splits", [None, 4])
def test_sequences_of_unequal_length_in_one_batch(tq, splits):
    """A batch whose second sequence holds far fewer pages than the first (its block-table row ends
    in -1 entries and the later page splits of it are empty) and whose third holds none. Each row
    equals its own reference; the empty one is 0, as SDPA gives over no keys (it was 0/0 = NaN)."""
    from nvfp4_compiler.backends.triton.attention_decode import paged_decode_attention

    gen = torch.Generator().manual_seed(11)
    cache = PagedNVFP4Cache(12, 16, 2, 32, device=DEVICE)
    for seq, chunks in ((0, (40, 33, 16)), (1, (20,)), (2, ())):
        cache.add_sequence(seq)
        for i, tokens in enumerate(chunks):
            k, v = (torch.randn(tokens, 2, 32, generator=gen) for _ in range(2))
            cache.append(seq, k.to(DEVICE), v.to(DEVICE), sink=i == 0)
    table, fills, npages = cache.page_tables([0, 1, 2])
    assert table[1, -1] == -1 and npages[2] == 0
    k_global, v_global = nan_guarded_scales(cache)
    q = torch.randn(3, tq, 2, 32, generator=gen).to(DEVICE)
    kernel = paged_decode_attention if tq == 1 else tattn.paged_attention
    out = torch.full_like(q, float("nan"))
    kernel(q, cache.k_data, cache.k_scale, k_global, cache.v_data, cache.v_scale, v_global, table, fills, npages,
           splits=splits, out=out)
    torch.testing.assert_close(out[:2], _reference(q[:2], cache, [0, 1], None, None), atol=2e-3, rtol=1e-2)
    assert torch.equal(out[2], torch.zeros_like(out[2]))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("tq", [1, 5])
def test_a_sequence_with_no_tokens_gives_zeros_as_sdpa_does(backend, tq):
    """``paged_attention`` over a sequence that holds no tokens (and no fresh K/V) returns what SDPA
    returns over no keys, zeros, on both backends; the other sequence of the batch is unaffected."""
    gen = torch.Generator().manual_seed(13)
    cache = PagedNVFP4Cache(4, 16, 2, 32, device=DEVICE)
    cache.add_sequence(0)
    cache.add_sequence(1)
    cache.append(1, *(torch.randn(21, 2, 32, generator=gen).to(DEVICE) for _ in range(2)))
    q = torch.randn(2, tq, 2, 32, generator=gen).to(DEVICE)
    out = paged_attention(q, cache, [0, 1], backend=backend)
    empty_sdpa = F.scaled_dot_product_attention(q[0].cpu().transpose(0, 1), *(torch.zeros(2, 0, 32),) * 2)
    assert torch.equal(empty_sdpa, torch.zeros_like(empty_sdpa))
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1:], _reference(q[1:], cache, [1], None, None), atol=2e-3, rtol=1e-2)
