"""The ``nvfp4_kv_cache`` pass: a dense K/V cache the model keeps becomes paged NVFP4 storage."""

import os

import pytest
import torch
import torch.nn.functional as F

import nvfp4_compiler as nvfp4
from nvfp4_compiler.generate import ChunkKVCache, generate_cached, generate_dense_cache
from nvfp4_compiler.kv_runtime import PagedKVStore, dense_past, past_handle, store_for
from nvfp4_compiler.models import DENSE_CACHE_DYNAMIC_INTS, build_model


# With NVFP4_TEST_ON_GPU=1: on the GPU, where the converted attention runs the Triton kernel. The
# GEMMs stay on the (deterministic) reference backend: split-K atomics would change fp32 rounding
# from run to run, and NVFP4 activation rounding turns such noise into code flips downstream.
DEVICE = torch.device("cuda" if os.environ.get("NVFP4_TEST_ON_GPU") == "1" else "cpu")
BACKEND = "reference"
# chunk 0 with vs without the pass: SDPA against the paged kernel (on GPU: fp16 q and P, whose
# rounding then flips NVFP4 codes downstream); on CPU both are fp32 online softmax
CHUNK0_TOLERANCE = 5e-2 if DEVICE.type == "cuda" else 1e-5


def _inputs(model, batch=2, chunks=3):
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    shape = (batch, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    return [torch.randn(shape, generator=gen).to(DEVICE) for _ in range(chunks)], torch.randn(
        batch, cfg.text_tokens, cfg.text_dim, generator=gen).to(DEVICE)


def _model(batch=2, chunks=3):
    model = build_model("tiny", device=DEVICE).eval()
    model.enable_dense_kv_cache(batch, chunks * model.cfg.chunk_tokens)
    return model


def test_converted_dense_cache_generates_what_the_explicit_nvfp4_cache_generates():
    """Same weights, same GEMM quantization: generation through the model's dense buffers, as
    rewritten by the pass, equals generation with an explicit PagedNVFP4Cache object."""
    model = _model()
    noise, text = _inputs(model)
    # Inductor off on both sides: on a GPU it would compile the explicit-cache graphs but not the
    # pass's (those call the KV runtime), and its fused fp32 arithmetic differs in the last bits,
    # which NVFP4 rounding downstream turns into a ~0.4% difference (H100, sixth session)
    compiled = nvfp4.compile(model, backend=BACKEND, kv_page_size=16, inductor=False)
    via_pass = generate_dense_cache(compiled, noise, text, steps=2)

    cfg = model.cfg
    cache = ChunkKVCache(cfg.num_layers, 2, cfg.num_heads, cfg.head_dim, num_pages=64, page_size=16, device=DEVICE)
    explicit = generate_cached(nvfp4.compile(model, backend=BACKEND, inductor=False), noise, text, cache, steps=2)
    for a, b in zip(via_pass, explicit):  # the same kernels on both sides: fp32 noise (GPU: fp16 P in both)
        assert (a - b).norm() / b.norm() < 1e-5

    report = compiled.report()
    converted = [a for a in report.attention if a.converted]
    # Dynamo captures a block once and reuses the graph for the others: the site names the first
    # block's buffers, and each block still gets its own pages (below).
    assert converted and all(a.k_buffer.endswith("self_attn.k_cache") and a.v_buffer.endswith("self_attn.v_cache")
                             for a in converted)
    plain = [a for a in report.attention if not a.converted]
    assert plain and all(a.reason.startswith("no KV cache") for a in plain)  # the cross-attention
    # every block keeps its own pages, holding all three chunks, 3.5x smaller than bf16 would be
    for block in model.blocks:
        store = store_for(block.self_attn.k_cache)
        assert store is not None and store.written == 3 * cfg.chunk_tokens
        store.cache.check_invariants()
        bf16_bytes = 2 * 2 * store.cache.num_pages * 16 * cfg.num_heads * cfg.head_dim
        assert bf16_bytes / store.cache.nbytes() >= 3.5


def test_pass_changes_results_only_by_kv_quantization():
    model = _model()
    noise, text = _inputs(model)
    on = generate_dense_cache(nvfp4.compile(model, backend=BACKEND, kv_page_size=16), noise, text, steps=2)
    off = generate_dense_cache(nvfp4.compile(model, backend=BACKEND, kv_cache=False), noise, text, steps=2)
    # chunk 0 attends to itself only (each of its writes restarts at 0): no NVFP4 K/V involved
    assert (on[0] - off[0]).norm() / off[0].norm() < CHUNK0_TOLERANCE
    for a, b in zip(on[1:], off[1:]):
        rel = float((a - b).norm() / b.norm())
        assert 1e-4 < rel < 0.05  # earlier chunks read from NVFP4 pages: close, and not identical


class _PlainAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(32, 96)

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 16)).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)


def test_models_without_a_cache_are_left_alone_and_reported():
    compiled = nvfp4.compile(_PlainAttention(), backend="reference")
    with torch.no_grad():
        compiled(torch.randn(1, 8, 32))
    (site,) = [s for g in compiled.backend.graphs for s in g.context.attention_sites]
    assert not site.converted and "mask, dropout, causal" in site.reason
    report = compiled.report().to_dict()
    assert report["attention"][0]["converted"] is False


def test_out_of_order_writes_raise_a_clear_error():
    model = _model(batch=1, chunks=3)
    noise, text = _inputs(model, batch=1)
    compiled = nvfp4.compile(model, backend=BACKEND, kv_page_size=16)
    tokens = model.cfg.chunk_tokens
    with torch.no_grad():
        compiled(noise[0], torch.zeros(1, device=DEVICE), text, cache_position=0)
        with pytest.raises(ValueError, match="written in order"):
            compiled(noise[1], torch.zeros(1, device=DEVICE), text, frame_offset=2, cache_position=2 * tokens)


class _ChunkAttention(torch.nn.Module):
    """A cached attention block whose K/V buffers are in SDPA's layout [B, H, T, D] ("bhtd") or in
    flash-attn's [B, T, H, D] ("bthd", read through ``.transpose(1, 2)``; "bthd_permute" through
    ``.permute(0, 2, 1, 3)``): the same arithmetic in all three."""

    def __init__(self, layout: str, dim=64, heads=2, max_tokens=48):
        super().__init__()
        self.layout, self.heads, self.head_dim = layout, heads, dim // heads
        torch.manual_seed(0)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        shape = (1, heads, max_tokens, dim // heads) if layout == "bhtd" else (1, max_tokens, heads, dim // heads)
        self.register_buffer("k_cache", torch.zeros(shape))
        self.register_buffer("v_cache", torch.zeros(shape))

    def _to_sdpa(self, t):  # [B, T, H, D] -> [B, H, T, D]
        return t.permute(0, 2, 1, 3) if self.layout == "bthd_permute" else t.transpose(1, 2)

    def forward(self, x, position: int):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(2)   # [B, T, H, D]
        end = position + x.shape[1]
        if self.layout == "bhtd":
            self.k_cache[:, :, position:end] = k.transpose(1, 2)
            self.v_cache[:, :, position:end] = v.transpose(1, 2)
            k_all, v_all = self.k_cache[:, :, :end], self.v_cache[:, :, :end]
        else:
            self.k_cache[:, position:end] = k
            self.v_cache[:, position:end] = v
            k_all, v_all = self._to_sdpa(self.k_cache[:, :end]), self._to_sdpa(self.v_cache[:, :end])
        o = F.scaled_dot_product_attention(self._to_sdpa(q), k_all, v_all)
        return self.out(o.transpose(1, 2).flatten(2))


def _run_chunks(model, kv_cache=True, chunks=3):
    compiled = nvfp4.compile(model, backend="reference", kv_page_size=16, kv_cache=kv_cache)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        outs = [compiled(torch.randn(1, 16, 64, generator=gen), 16 * i) for i in range(chunks)]
    return compiled, outs


@pytest.mark.parametrize("layout", ["bthd", "bthd_permute"])
def test_buffers_in_flash_attention_layout_are_converted(layout):
    """Buffers [B, T, H, D] read through a transpose or permute (Wan's and LongLive's layout) go into
    NVFP4 pages like SDPA-layout ones: the same outputs as the same block with [B, H, T, D] buffers
    (both converted), and different from the dense block only by the KV quantization."""
    model = _ChunkAttention(layout)
    compiled, flash = _run_chunks(model)
    converted = [a for a in compiled.report().attention if a.converted]
    assert converted and all(a.reason.endswith("[B, T, H, D] buffers)") and a.k_buffer == "k_cache"
                             for a in converted)
    assert store_for(model.k_cache).written == 48 and not model.k_cache.any()  # the buffers are never written

    _, sdpa_layout = _run_chunks(_ChunkAttention("bhtd"))
    _, dense = _run_chunks(_ChunkAttention(layout), kv_cache=False)
    for a, b in zip(flash, sdpa_layout):
        assert (a - b).norm() / b.norm() < 1e-6
    assert (flash[0] - dense[0]).norm() / dense[0].norm() < 1e-5  # chunk 0 reads no NVFP4 K/V
    # later chunks read earlier ones as NVFP4 (about 10% error per element, SQNR ~20 dB), which
    # reaches this one-block model's output directly (measured: 0.11 in both layouts)
    for a, b in zip(flash[1:], dense[1:]):
        assert 1e-3 < (a - b).norm() / b.norm() < 0.2


class _ConcatAttention(torch.nn.Module):
    """Hugging Face-style: the past K/V come in as arguments, the chunk's K/V are concatenated to
    them along the token axis of ``layout`` ([B, H, T, D] "bhtd", or [B, T, H, D] "bthd" read
    through a transpose), and the concatenation goes back out as the next past."""

    def __init__(self, layout: str, dim=64, heads=2):
        super().__init__()
        self.layout, self.heads, self.head_dim = layout, heads, dim // heads
        torch.manual_seed(0)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x, past=None):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(2)   # [B, T, H, D]
        q = q.transpose(1, 2)
        axis = 2 if self.layout == "bhtd" else 1
        if self.layout == "bhtd":
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=axis), torch.cat([past[1], v], dim=axis)
        k_sdpa, v_sdpa = (k, v) if self.layout == "bhtd" else (k.transpose(1, 2), v.transpose(1, 2))
        o = F.scaled_dot_product_attention(q, k_sdpa, v_sdpa)
        return self.out(o.transpose(1, 2).flatten(2)), (k, v)


def _chunks(n=4, batch=2):
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(batch, 16, 64, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("layout", ["bhtd", "bthd"])
def test_concatenated_past_goes_into_nvfp4_pages(layout):
    """Past K/V passed in and concatenated (HF's legacy past_key_values) are kept in NVFP4 pages:
    from the second call on the model returns handles (the concatenation's shape, no storage), and
    each chunk's output equals the unconverted model's over the same K/V dequantized from the
    pages (fp32 noise), so the pages are the only difference. The first past (dense, from the
    call without one) is quantized into the pages by the second call."""
    model = _ConcatAttention(layout).eval()
    converted = nvfp4.compile(model, backend="reference", kv_page_size=16)
    dense = nvfp4.compile(model, backend="reference", kv_cache=False)
    axis = 2 if layout == "bhtd" else 1
    with torch.no_grad():
        past = None
        for i, x in enumerate(_chunks(6)):
            out, new_past = converted(x, past)
            # the unconverted model over what the pages held for this call
            paged = None if past is None else tuple(
                dense_past(p, which).transpose(1, 2) if layout == "bhtd" else dense_past(p, which)
                for p, which in zip(past, "kv"))
            expected, _ = dense(x, paged)
            assert (out - expected).norm() / expected.norm() < 1e-5
            past = new_past
            assert past[0].shape[axis] == 16 * (i + 1)
            if i:
                assert past_handle(past[0]) is not None and past_handle(past[1]) == past_handle(past[0])
                assert past[0].stride() == (0, 0, 0, 0) and past[0].untyped_storage().nbytes() == 4
    # no past, a dense past, then handles: their token axis is dynamic, so one graph serves every
    # later call (nvfp4.compile specializes shapes otherwise: a recompile per call as the past grows)
    assert len(converted.backend.graphs) == 3
    sites = [a for a in converted.report().attention if a.converted]
    assert sites and sites[0].k_buffer == "past[0]" and sites[0].reason.startswith("past K/V concatenated")
    with torch.no_grad():  # the handles hold NVFP4 K/V close to the dense ones (the dequantized pages)
        _, dense_pasts = dense(torch.cat(_chunks(6), dim=1), None)
    k_pages = dense_past(past[0], "k")
    k_dense = dense_pasts[0].transpose(1, 2) if layout == "bhtd" else dense_pasts[0]
    assert 0.02 < (k_pages - k_dense).norm() / k_dense.norm() < 0.2


def test_denoising_steps_from_one_past_replace_each_other():
    """Diffusion steps call the model several times with the same past and keep the last call's
    result: each call rewrites the chunk's positions, the same inputs give the same outputs, and a
    past from an overwritten step raises instead of reading another step's K/V."""
    model = _ConcatAttention("bhtd").eval()
    compiled = nvfp4.compile(model, backend="reference", kv_page_size=16)
    x0, x1, x2 = _chunks(3)
    with torch.no_grad():
        _, past = compiled(x0)
        _, past = compiled(x1, past)                  # a handle from here on
        out_a, stale = compiled(x2, past)             # denoising step 1 of chunk 2
        out_b, kept = compiled(x2, past)              # step 2 from the same past: replaces step 1
        assert torch.equal(out_a, out_b)
        assert past_handle(kept[0]).store is past_handle(past[0]).store  # one store, no copy
        with pytest.raises(ValueError, match="rewritten by a later call"):
            compiled(x0, stale)
        compiled(x0, kept)                            # the kept past goes on
        with pytest.raises(ValueError, match="slice or reshape"):
            compiled(x0, (kept[0][:, :, :16], kept[1][:, :, :16]))
        with pytest.raises(ValueError, match="not the pair"):
            compiled(x0, (kept[0], past[1]))


class _PastNotReturned(_ConcatAttention):
    def forward(self, x, past=None):
        return super().forward(x, past)[0]


def test_a_concatenation_that_is_not_returned_is_left_alone():
    compiled = nvfp4.compile(_PastNotReturned("bhtd").eval(), backend="reference")
    past = (torch.randn(2, 2, 16, 32), torch.randn(2, 2, 16, 32))
    with torch.no_grad():
        compiled(_chunks(1)[0], past)
    (site,) = compiled.report().attention
    assert not site.converted and "not returned as the next past" in site.reason


class _CacheObject:
    """An explicit cache object the model is given, shaped like transformers' DynamicCache: its
    ``update`` concatenates a layer's new K/V to the stored ones and returns the result."""

    def __init__(self):
        self.keys, self.values = [], []

    def update(self, k, v, layer: int):
        if len(self.keys) <= layer:
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=-2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=-2)
        return self.keys[layer], self.values[layer]


class _CacheObjectBlock(torch.nn.Module):
    def __init__(self, layer: int):
        super().__init__()
        self.layer = layer
        torch.manual_seed(layer)
        self.qkv = torch.nn.Linear(64, 192)
        self.out = torch.nn.Linear(64, 64)

    def forward(self, x, cache):
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 32)).permute(2, 0, 3, 1, 4)   # [B, H, T, D] each
        k, v = cache.update(k, v, self.layer)
        return x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class _CacheObjectModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_CacheObjectBlock(0), _CacheObjectBlock(1)])

    def forward(self, x, cache):
        for block in self.blocks:
            x = block(x, cache)
        return x


def test_an_explicit_cache_object_holds_nvfp4_handles():
    """The model is given a cache object whose update() concatenates (DynamicCache's shape): after
    the first chunk the object holds handles to NVFP4 pages, one store per layer, and each chunk
    equals the unconverted model over the K/V dequantized from those pages."""
    model = _CacheObjectModel().eval()
    converted = nvfp4.compile(model, backend="reference", kv_page_size=16)
    dense = nvfp4.compile(model, backend="reference", kv_cache=False)
    cache = _CacheObject()
    with torch.no_grad():
        for i, x in enumerate(_chunks(4, batch=1)):
            pasts = [(k, v) for k, v in zip(cache.keys, cache.values)]
            out = converted(x, cache)
            paged = _CacheObject()  # what the pages held for this call, as dense tensors
            for k, v in pasts:
                paged.keys.append(dense_past(k, "k").transpose(1, 2))
                paged.values.append(dense_past(v, "v").transpose(1, 2))
            expected = dense(x, paged)
            assert (out - expected).norm() / expected.norm() < 1e-5
            if i:
                handles = [past_handle(k) for k in cache.keys]
                assert None not in handles and handles[0].store is not handles[1].store
                assert handles[0].tokens == 16 * (i + 1)
    names = sorted(a.k_buffer for a in converted.report().attention if a.converted)
    assert names == ["cache.keys[0]", "cache.keys[1]"]


@pytest.mark.parametrize("dynamic_ints", [(), DENSE_CACHE_DYNAMIC_INTS])
def test_buffers_rolled_past_a_sink_generate_what_a_windowed_nvfp4_cache_generates(dynamic_ints):
    """LongLive's dense cache with a sink: when a new chunk does not fit, the model drops the oldest
    chunk after the sink by copying the rest down (``enable_dense_kv_cache(sink_tokens=...)``). The
    pass turns that copy into dropping the chunk's pages, so generation equals generation with an
    explicit NVFP4 cache holding the sink and a window of the same size. With the positions and
    counters kept symbolic (``dynamic_ints``), three captures serve all chunks (the first chunk,
    the others' denoising steps, the others' first steps, which roll); otherwise each new value is
    a capture."""
    chunks, tokens = 6, 32  # tiny: 32 tokens a chunk; the buffers hold the sink, two chunks and the new one
    model = build_model("tiny", device=DEVICE).eval()
    assert model.cfg.chunk_tokens == tokens
    model.enable_dense_kv_cache(2, 4 * tokens, sink_tokens=tokens)
    noise, text = _inputs(model, chunks=chunks)
    compiled = nvfp4.compile(model, backend=BACKEND, kv_page_size=16, inductor=False, dynamic_ints=dynamic_ints)
    via_pass = generate_dense_cache(compiled, noise, text, steps=2)
    if dynamic_ints:
        assert len(compiled.backend.graphs) == 3
    else:
        assert len(compiled.backend.graphs) > chunks  # measured: 11

    cfg = model.cfg
    cache = ChunkKVCache(cfg.num_layers, 2, cfg.num_heads, cfg.head_dim, num_pages=64, page_size=16,
                         window_tokens=2 * tokens, device=DEVICE)
    explicit = generate_cached(nvfp4.compile(model, backend=BACKEND, inductor=False), noise, text, cache, steps=2)
    for a, b in zip(via_pass, explicit):
        assert (a - b).norm() / b.norm() < 1e-5

    sites = [a for g in compiled.backend.graphs for a in g.context.attention_sites]  # the report keeps the last
    rolled = {a.k_buffer for a in sites if a.converted and "rolled past a 32-token sink" in a.reason}
    assert rolled == {f"blocks.{i}.self_attn.k_cache" for i in range(cfg.num_layers)}
    for block in model.blocks:  # the sink, the window and the last chunk: 4 chunks of 2 pages per sequence
        store = store_for(block.self_attn.k_cache)
        assert store.written == 4 * tokens and store.cache.free_pages == store.cache.num_pages - 2 * 4 * 2
        store.cache.check_invariants()


def test_a_roll_that_does_not_drop_whole_writes_raises_and_changes_nothing():
    store = PagedKVStore(1, 2, 32, 64, 16, "cpu")
    k = torch.randn(1, 24, 2, 32)
    store.attend(torch.randn(1, 2, 4, 32), k, k, 0, 0, None)       # a write of 24 tokens: pages of 16 + 8
    store.attend(torch.randn(1, 2, 4, 32), k, k, 24, 0, None)
    with pytest.raises(ValueError, match="page boundaries"):
        store.roll(8, 32, 24, 48)                                   # drops 8..24: not a page range
    with pytest.raises(ValueError, match="holds 0..47"):
        store.roll(0, 8, 24, 32)                                    # does not move everything after
    with pytest.raises(ValueError, match="holds 0..47"):
        store.roll(24, 48, 24, 48)                                  # drops nothing
    assert store.written == 48 and store.cache.length(0) == 48


def test_reaching_the_recompile_limit_after_a_conversion_raises_instead_of_reading_stale_buffers():
    """Each new cache position is a new capture. Past Dynamo's recompile limit the model would run
    eagerly, attending over dense buffers the converted graphs never wrote (measured: 4-5% off,
    silently); once a cache is converted, that is a clear error instead."""
    from nvfp4_compiler.capture import CaptureError

    model = _ChunkAttention("bhtd")
    compiled = nvfp4.compile(model, backend="reference", kv_page_size=16)
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=2):
        for i, x in enumerate(_chunks(2, batch=1)):
            compiled(x, 16 * i)
        assert not model.k_cache.any()                   # the dense buffers were never written
        with pytest.raises(CaptureError, match="recompile_limit=2 reached"):
            compiled(_chunks(1, batch=1)[0], 32)


class _MaskableChunkAttention(_ChunkAttention):
    def forward(self, x, position: int, mask=None):
        if mask is None:
            return super().forward(x, position)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(2)
        end = position + x.shape[1]
        self.k_cache[:, :, position:end] = k.transpose(1, 2)
        self.v_cache[:, :, position:end] = v.transpose(1, 2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), self.k_cache[:, :, :end], self.v_cache[:, :, :end],
                                           attn_mask=mask)
        return self.out(o.transpose(1, 2).flatten(2))


def test_a_graph_that_cannot_convert_a_paged_buffer_raises_instead_of_reading_it_stale():
    """After the cache moved into NVFP4 pages, a call whose attention the pass cannot convert (here
    a mask) would attend over the dense buffers, which nothing wrote: an error names why."""
    model = _MaskableChunkAttention("bhtd")
    compiled = nvfp4.compile(model, backend="reference", kv_page_size=16)
    x0, x1 = _chunks(2, batch=1)
    with torch.no_grad():
        compiled(x0, 0)
        with pytest.raises(ValueError, match=r"k_cache lives in NVFP4 pages.*mask, dropout"):
            compiled(x1, 16, torch.ones(16, 32, dtype=torch.bool))
