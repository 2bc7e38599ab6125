import torch, nvfp4_compiler as nvfp4
from nvfp4_compiler import generate as G, paged_attention as PA
from nvfp4_compiler.generate import ChunkKVCache, generate_cached, generate_dense_cache
from nvfp4_compiler.models import build_model
D = torch.device("cuda")
def run(dense_kv, explicit_backend=None, gemm="reference"):
    torch._dynamo.reset()
    model = build_model("tiny", device=D).eval(); model.enable_dense_kv_cache(2, 96)
    cfg = model.cfg; gen = torch.Generator().manual_seed(0)
    shape = (2, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    noise = [torch.randn(shape, generator=gen).to(D) for _ in range(3)]
    text = torch.randn(2, cfg.text_tokens, cfg.text_dim, generator=gen).to(D)
    if dense_kv is not None:
        return generate_dense_cache(nvfp4.compile(model, backend=gemm, kv_page_size=16, kv_cache=dense_kv), noise, text, steps=2)
    orig = G.paged_attention
    if explicit_backend:
        G.paged_attention = lambda *a, **k: orig(*a, backend=explicit_backend, **k)
    cache = ChunkKVCache(cfg.num_layers, 2, cfg.num_heads, cfg.head_dim, num_pages=64, page_size=16, device=D)
    out = generate_cached(nvfp4.compile(model, backend=gemm), noise, text, cache, steps=2)
    G.paged_attention = orig
    return out
res = {"pass": run(True), "dense": run(False), "explicit_triton": run(None), "explicit_ref": run(None, "reference")}
names = list(res)
for i in range(len(names)):
    for j in range(i + 1, len(names)):
        a, b = res[names[i]], res[names[j]]
        print(names[i], names[j], [round(float((x - y).norm() / y.norm()), 5) for x, y in zip(a, b)])
