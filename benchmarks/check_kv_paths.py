"""GPU check: the embedded tiny model generates the same video along every KV-cache path.

    pass              dense buffers rewritten by the nvfp4_kv_cache pass (paged NVFP4, Triton attention)
    dense             dense buffers, pass off (bf16/fp32 K/V, SDPA)
    explicit_triton   an explicit PagedNVFP4Cache object (generate_cached), Triton attention
    explicit_ref      the same with the reference paged attention

Prints the relative difference per chunk for every pair. Expected: pass ~ explicit_* within fp16
noise of the kernel; all within NVFP4 K/V noise (a few %) of dense. GEMMs run on the reference
backend (deterministic).

    python benchmarks/check_kv_paths.py
"""

import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler import generate
from nvfp4_compiler.generate import ChunkKVCache, generate_cached, generate_dense_cache
from nvfp4_compiler.models import build_model

DEVICE = torch.device("cuda")


def _setup():
    torch._dynamo.reset()
    model = build_model("tiny", device=DEVICE).eval()
    model.enable_dense_kv_cache(2, 3 * model.cfg.chunk_tokens)
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    shape = (2, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    noise = [torch.randn(shape, generator=gen).to(DEVICE) for _ in range(3)]
    text = torch.randn(2, cfg.text_tokens, cfg.text_dim, generator=gen).to(DEVICE)
    return model, noise, text


def dense_path(kv_cache: bool):
    model, noise, text = _setup()
    compiled = nvfp4.compile(model, backend="reference", kv_page_size=16, kv_cache=kv_cache)
    return generate_dense_cache(compiled, noise, text, steps=2)


def explicit_path(attention_backend: str):
    model, noise, text = _setup()
    cfg = model.cfg
    original = generate.paged_attention
    generate.paged_attention = lambda *a, **k: original(*a, backend=attention_backend, **k)
    try:
        cache = ChunkKVCache(cfg.num_layers, 2, cfg.num_heads, cfg.head_dim, num_pages=64, page_size=16,
                             device=DEVICE)
        return generate_cached(nvfp4.compile(model, backend="reference"), noise, text, cache, steps=2)
    finally:
        generate.paged_attention = original


if __name__ == "__main__":
    results = {"pass": dense_path(True), "dense": dense_path(False),
               "explicit_triton": explicit_path("triton"), "explicit_ref": explicit_path("reference")}
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rel = [round(float((x - y).norm() / y.norm()), 5) for x, y in zip(results[a], results[b])]
            print(f"{a:>16} vs {b:<16} {rel}")
