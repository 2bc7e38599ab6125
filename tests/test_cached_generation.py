"""LongLive-style generation with the NVFP4 paged KV cache as the model's attention memory."""

import torch

from nvfp4_compiler.generate import ChunkKVCache, generate_cached
from nvfp4_compiler.models import build_model


def _setup(window_tokens=None, batch=2):
    model = build_model("tiny").eval()
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    shape = (batch, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    noise = [torch.randn(shape, generator=gen) for _ in range(4)]
    text = torch.randn(batch, cfg.text_tokens, cfg.text_dim, generator=gen)

    def new_cache():
        return ChunkKVCache(cfg.num_layers, batch, cfg.num_heads, cfg.head_dim, num_pages=48, page_size=16,
                            window_tokens=window_tokens)

    return model, noise, text, new_cache


def test_paged_attention_generation_equals_dequantize_everything_then_sdpa():
    model, noise, text, new_cache = _setup(window_tokens=32)
    paged = generate_cached(model, noise, text, new_cache(), steps=3, attention="paged")
    dense = generate_cached(model, noise, text, new_cache(), steps=3, attention="dequantize_all")
    for a, b in zip(paged, dense):
        assert (a - b).norm() / b.norm() < 1e-5


def test_cache_holds_sink_and_window_and_is_3_5x_smaller_than_bf16():
    model, noise, text, new_cache = _setup(window_tokens=32)
    cache = new_cache()
    generate_cached(model, noise, text, cache, steps=2)
    chunk_tokens = model.cfg.chunk_tokens
    for layer in cache.caches:
        for seq in cache.seqs:
            state = layer._get(seq)
            assert sum(state.fill[: state.sink_pages]) == chunk_tokens  # the first chunk, kept
            assert sum(state.fill[state.sink_pages:]) <= 32              # the window
            assert layer.start_position(seq) == 2 * chunk_tokens       # chunks 1 and 2 evicted
        layer.check_invariants()
    c = model.cfg
    bf16_bytes = 2 * 2 * cache.caches[0].num_pages * 16 * c.num_heads * c.head_dim * len(cache.caches)
    assert bf16_bytes / cache.nbytes() >= 3.5


def test_cached_generation_differs_from_no_memory_and_is_finite():
    model, noise, text, new_cache = _setup()
    with_cache = generate_cached(model, noise, text, new_cache(), steps=2)
    assert all(torch.isfinite(c).all() for c in with_cache)
    # chunk 0 has nothing to attend to yet; later chunks do, so they depend on what was cached
    alone = generate_cached(model, noise[1:2], text, new_cache(), steps=2)
    assert not torch.allclose(with_cache[1], alone[0])
