"""The Gluon (Hopper wgmma) decode-attention kernels against the reference and the Triton kernel:
``attention_wgmma`` (one warpgroup), ``attention_wgmma_ring`` (the same with page bytes copied into
shared memory by cp.async, several pages ahead) and ``attention_wgmma_ws`` (warp-specialized:
decode warps feed a wgmma warpgroup through a shared-memory ring).

Gluon has no CPU interpreter, so on the CPU machine the kernel is only compiled for sm_90 (which
checks that the asynchronous wgmma path is what the code builds) and its dispatch rule is
checked; with NVFP4_TEST_ON_GPU=1 on an sm_90 GPU it runs against SDPA over the dequantized cache.
q and P go through fp16 for the tensor cores (K/V decode exactly), so the tolerance is the Triton
kernel's: 3e-3 absolute, 1e-2 relative.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from kv_guards import nan_guarded_scales
from sm90_compile import compile_for_sm90
from nvfp4_compiler.backends.triton import attention_wgmma as wg
from nvfp4_compiler.backends.triton import attention_wgmma_ring as ring
from nvfp4_compiler.backends.triton import attention_wgmma_ws as ws
from nvfp4_compiler.kv_cache import PagedNVFP4Cache

ON_GPU = os.environ.get("NVFP4_TEST_ON_GPU") == "1"
ON_HOPPER = ON_GPU and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
needs_hopper = pytest.mark.skipif(not ON_HOPPER, reason="runs the kernel: needs NVFP4_TEST_ON_GPU=1 on an sm_90 GPU "
                                                        "(Gluon has no CPU interpreter)")


def _cache(heads, dim, chunks, window=None, seqs=2, seed=0):
    """64-token pages; sequences of a sink chunk and window chunks of uneven sizes (part-filled pages)."""
    gen = torch.Generator().manual_seed(seed)
    pages = seqs * sum(-(-t // 64) for t in chunks)
    cache = PagedNVFP4Cache(pages, 64, heads, dim, window_tokens=window, device="cuda")
    for seq in range(seqs):
        cache.add_sequence(seq)
        for i, tokens in enumerate(chunks):
            k, v = (torch.randn(tokens, heads, dim, generator=gen) * 3 for _ in range(2))
            cache.append(seq, k.cuda(), v.cuda(), sink=i == 0)
    return cache


def _reference(q, cache, seqs):
    out = []
    for row, seq in enumerate(seqs):
        k, v = cache.gather(seq)
        o = F.scaled_dot_product_attention(q[row].float().transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
        out.append(o.transpose(0, 1))
    return torch.stack(out)


KERNELS = {"wgmma": lambda *a, **kw: wg.paged_decode_wgmma(*a, **kw),
           "ring": lambda *a, **kw: ring.paged_decode_ring(*a, **kw),
           "ring_5": lambda *a, **kw: ring.paged_decode_ring(*a, ring=ring.MAX_RING, **kw),
           "ws": lambda *a, **kw: ws.paged_decode_ws(*a, **kw),
           # the other register split (4 decode warps, two programs per SM), a three-page ring, one
           # page requested ahead
           "ws_4x96": lambda *a, **kw: ws.paged_decode_ws(*a, producer_warps=4, producer_regs=96, max_regs=128,
                                                          nbuf=3, ahead=1, **kw)}


def _run(q, cache, seqs, kernel="wgmma", **kw):
    table, fills, npages = cache.page_tables(seqs, q.device)
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    KERNELS[kernel](q, cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale,
                    cache.v_global, table, fills, npages, out=out, **kw)
    return out


CASES = [  # heads, dim, chunks (first = sink), window, Tq
    (2, 128, (64, 100, 37), None, 2),
    (3, 128, (130, 64, 500), 600, 16),
    (2, 64, (200, 77), None, 33),
    (12, 128, (4680, 4680, 4680), 9360, 64),
]


@needs_hopper
@pytest.mark.parametrize("heads,dim,chunks,window,tq", CASES)
@pytest.mark.parametrize("splits", [None, 1, 3, 64])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_wgmma_decode_matches_reference(heads, dim, chunks, window, tq, splits, dtype, kernel):
    """64 splits leave some splits empty (fewer pages than splits in the small cases)."""
    cache = _cache(heads, dim, chunks, window)
    q = torch.randn(2, tq, heads, dim, generator=torch.Generator().manual_seed(1)).cuda().to(dtype)
    out = _run(q, cache, [0, 1], kernel, splits=splits)
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), _reference(q, cache, [0, 1]), atol=3e-3, rtol=1e-2)


@needs_hopper
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_wgmma_decode_takes_pages_with_zero_v_scale_and_jumping_maxima(kernel):
    """A page whose V decode scale is 0 (its values are zeros: the kernel drops its P and keeps the
    accumulator's unit), and keys whose scores grow page by page far past fp16 P's range."""
    gen = torch.Generator().manual_seed(9)
    cache = PagedNVFP4Cache(40, 64, 2, 128, device="cuda")
    cache.add_sequence(0)
    q = torch.randn(1, 8, 2, 128, generator=gen)
    for growth in (0.5, 2.0, 8.0, 1.0, 4.0):  # the fourth chunk falls back below the max
        k = q[0, :1].expand(150, 2, 128) * growth + torch.randn(150, 2, 128, generator=gen)
        cache.append(0, k.contiguous().cuda(), torch.randn(150, 2, 128, generator=gen).cuda())
    table, _, _ = cache.page_tables([0])
    cache.v_global[int(table[0, 3])] = 0.0   # a page in the middle
    cache.v_global[int(table[0, 0])] = 0.0   # the first page: the unit starts at 1
    q = q.cuda()
    want = _reference(q, cache, [0])
    for splits in (1, 2, 5):
        torch.testing.assert_close(_run(q, cache, [0], kernel, splits=splits), want, atol=3e-3, rtol=1e-2)


@needs_hopper
def test_wgmma_decode_equals_triton_kernel_within_fp16_rounding():
    """Same fp16 q and P roundings as the Triton tensor-core kernel; they differ in the order of the
    fp32 sums and where the page scale is applied, so within a few fp16 ulps of P."""
    from nvfp4_compiler.backends.triton.attention import paged_attention

    cache = _cache(4, 128, (640, 1000, 333))
    q = torch.randn(2, 40, 4, 128, generator=torch.Generator().manual_seed(2)).cuda().bfloat16()
    table, fills, npages = cache.page_tables([0, 1], q.device)
    pages = (cache.k_data, cache.k_scale, cache.k_global, cache.v_data, cache.v_scale, cache.v_global, table, fills)
    torch.testing.assert_close(_run(q, cache, [0, 1]).float(), paged_attention(q, *pages, npages).float(),
                               atol=2e-3, rtol=1e-2)


@needs_hopper
@pytest.mark.parametrize("splits", [None, 4])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_wgmma_decode_sequences_of_unequal_length(splits, kernel):
    """The second sequence holds far fewer pages: its block-table row ends in -1 entries and its
    later splits are empty; the third holds none (its output is 0, as SDPA gives over no keys).
    The scale arrays are views one row into arrays whose first row is NaN, so reading the scales
    of page -1 (an empty split's V unit) would turn the output to NaN."""
    gen = torch.Generator().manual_seed(12)
    cache = PagedNVFP4Cache(40, 64, 2, 128, device="cuda")
    for seq, chunks in ((0, (640, 700, 333)), (1, (100,)), (2, ())):
        cache.add_sequence(seq)
        for i, tokens in enumerate(chunks):
            k, v = (torch.randn(tokens, 2, 128, generator=gen) for _ in range(2))
            cache.append(seq, k.cuda(), v.cuda(), sink=i == 0)
    table, fills, npages = cache.page_tables([0, 1, 2])
    guarded = nan_guarded_scales(cache)
    q = torch.randn(3, 32, 2, 128, generator=gen).cuda().bfloat16()
    out = torch.full_like(q, float("nan"))
    KERNELS[kernel](q, cache.k_data, cache.k_scale, guarded[0], cache.v_data, cache.v_scale, guarded[1],
                    table, fills, npages, splits=splits, out=out)
    torch.testing.assert_close(out[:2].float(), _reference(q[:2], cache, [0, 1]), atol=3e-3, rtol=1e-2)
    assert torch.equal(out[2], torch.zeros_like(out[2]))


@needs_hopper
@pytest.mark.parametrize("tq", [16, 64])
def test_ws_kernel_equals_wgmma_kernel_within_fp32_order(tq):
    """The same decode, fp16 roundings and V-unit bookkeeping as the one-warpgroup kernel, on other
    warps: equal up to the order of the same fp32 operations."""
    cache = _cache(4, 128, (640, 1000, 333))
    q = torch.randn(2, tq, 4, 128, generator=torch.Generator().manual_seed(3)).cuda().bfloat16()
    for splits, ahead in ((1, 3), (7, 2), (7, 1)):
        torch.testing.assert_close(_run(q, cache, [0, 1], "ws", splits=splits, ahead=ahead).float(),
                                   _run(q, cache, [0, 1], "wgmma", splits=splits).float(), atol=2e-5, rtol=1e-4)


@needs_hopper
@pytest.mark.parametrize("tq", [16, 64])
def test_ring_kernel_gives_the_wgmma_kernels_bits(tq):
    """Copying the page bytes into shared memory pages ahead changes when they arrive, not what is
    computed: bit-identical to the one-warpgroup kernel at the same split count, for every ring
    depth (its pages past a split's end and rows past a page's fill arrive as zeros)."""
    cache = _cache(4, 128, (640, 1000, 333))
    q = torch.randn(2, tq, 4, 128, generator=torch.Generator().manual_seed(4)).cuda().bfloat16()
    for splits in (1, 7):
        want = _run(q, cache, [0, 1], "wgmma", splits=splits)
        for depth in range(2, ring.MAX_RING + 1):
            assert torch.equal(_run(q, cache, [0, 1], "ring", splits=splits, ring=depth), want), (splits, depth)


def test_ring_depth_is_checked():
    q = torch.zeros(1, 16, 2, 128)
    for depth in (1, ring.MAX_RING + 1, 3.0):
        with pytest.raises(ValueError, match="ring: expected 2 to"):
            ring.paged_decode_ring(q, *([None] * 9), ring=depth)


# Compiles the kernel for sm_90 with Triton's bundled ptxas and prints the PTX. It runs in a fresh
# process without TRITON_INTERPRET: in the test process the interpreter may have left its patches of
# triton.language in place (seen with Triton 3.9 after test_onnx_export.py then
# test_paged_attention_triton.py), and Gluon's compiler then calls into the interpreter's builder.
_POINTER_TYPES = {"q_ptr": "*bf16", "out_ptr": "*bf16", "kg_ptr": "*fp32", "vg_ptr": "*fp32", "table_ptr": "*i32",
                  "fills_ptr": "*i32", "npages_ptr": "*i32", "ws_m_ptr": "*fp32", "ws_l_ptr": "*fp32",
                  "ws_acc_ptr": "*fp32"}


def _compile_for_sm90(kernel: str) -> tuple[str, str]:
    """(PTX, cuobjdump -res-usage report) of ``kernel`` ("wgmma", "ring" or "ws") compiled for sm_90 in a
    fresh process."""
    if kernel == "wgmma":
        name, consts, options = "paged_decode_wgmma_kernel", {}, {"num_warps": wg.NUM_WARPS}
    elif kernel == "ring":
        name, consts, options = "paged_decode_ring_kernel", {"RING": ring.RING}, {"num_warps": wg.NUM_WARPS}
    else:
        name = "paged_decode_ws_kernel"
        consts = dict(NBUF=ws.NBUF, PRODUCER_WARPS=ws.PRODUCER_WARPS, PRODUCER_REGS=ws.PRODUCER_REGS, AHEAD=ws.AHEAD)
        options = {"num_warps": ws.CONSUMER_WARPS, "maxnreg": ws.MAX_REGS}
    consts.update(D=128, S=64, SPLIT=True, num_warps=options["num_warps"])
    module = {"wgmma": wg, "ring": ring, "ws": ws}[kernel].__name__
    return compile_for_sm90(f"{module}:{name}", consts, options, dict(_POINTER_TYPES, qk_scale="fp32"))


def test_wgmma_kernel_compiles_for_sm90_with_asynchronous_mma():
    """Without a GPU: the kernel compiles for sm_90 (Triton's bundled ptxas), and the PTX holds the
    asynchronous wgmma path the design relies on (no spills), not a fallback."""
    ptx, info = _compile_for_sm90("wgmma")
    assert ptx.count("wgmma.mma_async") >= 4 and "wgmma.wait_group.sync.aligned 0" in ptx
    assert "wgmma.commit_group" in ptx and ".local" not in ptx  # no local memory in the PTX


def test_ring_kernel_compiles_for_sm90_with_page_bytes_in_cp_async():
    """The ring kernel's page bytes go through cp.async: 16-byte copies for the packed bytes, 4-byte
    ones for the scale bits, for the RING - 1 pages of the prologue and one page per iteration,
    waited for RING - 1 groups deep; still the asynchronous wgmma path, and no spills."""
    ptx, info = _compile_for_sm90("ring")
    assert ptx.count("cp.async.cg.shared.global") >= 4 * ring.RING   # K and V, two per thread, per page
    assert f"cp.async.wait_group \t{ring.RING - 1};" in ptx
    assert ptx.count("wgmma.mma_async") >= 4 and "STACK:0" in info and ".local" not in ptx, info


def test_ws_kernel_compiles_for_sm90_as_two_partitions_without_spills():
    """The warp-specialized kernel: the producer and consumer partitions get their registers
    (setmaxnreg), hand pages over through mbarriers, and the consumer runs asynchronous wgmma,
    without spills (Triton 3.6, the device's, and 3.9). (Compiled without the launcher's 16-byte
    pointer alignment, 3.9 spilled 240 bytes: the page bytes were then loaded one at a time.)"""
    ptx, info = _compile_for_sm90("ws")
    assert f"setmaxnreg.inc.sync.aligned.u32 \t{ws.PRODUCER_REGS};" in ptx
    assert "mbarrier.try_wait.parity" in ptx and "mbarrier.arrive" in ptx
    assert ptx.count("wgmma.mma_async") >= 4 and "wgmma.commit_group" in ptx
    assert "REG:" in info and "STACK:0" in info, info


def test_ws_split_count_avoids_a_nearly_empty_last_wave():
    """One program per SM on 132 SMs: Wan-5B's 24 heads at 6 splits would launch 144 programs (a
    second wave of 12, measured 1.6x slower on the H100 than 22 splits); the rule picks 11 (two
    full waves). Wan-1.3B's 12 heads fill one wave at 11."""
    assert ws.splits_for_fewest_rounds(24, 550, 132) == 11
    assert ws.splits_for_fewest_rounds(12, 366, 132) == 11
    assert ws.splits_for_fewest_rounds(2, 3, 132) == 1       # fewer than 4 pages: no split


def test_supports_only_sm90_decode_calls():
    q = torch.zeros(1, 16, 2, 128)
    assert not wg.supports(q, 64, has_new=False)              # CPU tensors
    if ON_HOPPER:
        q = q.cuda()
        assert wg.supports(q, 64, has_new=False)
        assert not wg.supports(q, 64, has_new=True)           # fresh K/V: the Triton kernel
        assert not wg.supports(q[:, :1], 64, has_new=False)   # one query: the CUDA-core kernel
        assert not wg.supports(torch.zeros(1, 65, 2, 128, device="cuda"), 64, has_new=False)
        assert not wg.supports(q, 32, has_new=False)          # one wgmma N block per page


def test_auto_route_takes_wgmma_only_where_it_applies():
    from nvfp4_compiler.paged_attention import SCRATCH_MIN_FRESH, WGMMA_MIN_QUERIES, auto_route, wgmma_applies

    assert not wgmma_applies(torch.zeros(1, 32, 2, 128), 64, has_new=False)  # CPU tensors: never

    assert auto_route(64, 0, wgmma_ok=True) == "wgmma"
    assert auto_route(WGMMA_MIN_QUERIES, 0, wgmma_ok=True) == "wgmma"
    assert auto_route(WGMMA_MIN_QUERIES - 1, 0, wgmma_ok=True) == "in_register"
    assert auto_route(64, 0, wgmma_ok=False) == "in_register"
    assert auto_route(1, 0, wgmma_ok=True) == "vector"
    assert auto_route(64, SCRATCH_MIN_FRESH, wgmma_ok=True) == "scratch"


@needs_hopper
def test_paged_attention_dispatches_decode_sized_queries_to_wgmma(monkeypatch):
    from nvfp4_compiler.paged_attention import WGMMA_MIN_QUERIES, paged_attention

    calls = []
    real = wg.paged_decode_wgmma
    monkeypatch.setattr(wg, "paged_decode_wgmma", lambda *a, **k: calls.append(a[0].shape[1]) or real(*a, **k))
    cache = _cache(2, 128, (100, 90))
    gen = torch.Generator().manual_seed(4)
    for tq in (WGMMA_MIN_QUERIES - 1, WGMMA_MIN_QUERIES, 64, 65):
        q = torch.randn(2, tq, 2, 128, generator=gen).cuda().bfloat16()
        out = paged_attention(q, cache, [0, 1])
        torch.testing.assert_close(out.float(), _reference(q, cache, [0, 1]), atol=3e-3, rtol=1e-2)
    assert calls == [WGMMA_MIN_QUERIES, 64]
