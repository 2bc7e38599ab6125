"""``nvfp4 demo``: compile the embedded tiny video DiT, generate chunks, compare against bf16.

Both runs generate LongLive-style, chunk after chunk, each chunk attending through the model's own
KV cache to a frame sink (the first chunk) and a rolling window (the chunk before it). The bf16
model keeps that cache in its dense bf16 buffers, rolled by a copy when a chunk does not fit; the
compiled one has its GEMMs and its KV cache in NVFP4 (the ``nvfp4_kv_cache`` pass moves the
buffers into paged NVFP4 storage, read in place by the attention, and turns the roll into freeing
the dropped chunk's pages): the whole envelope."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.progress import Progress

from .api import compile as nvfp4_compile
from .api import report as nvfp4_report
from .generate import generate_dense_cache
from .kv_runtime import store_for
from .models import DENSE_CACHE_DYNAMIC_INTS, build_model, get_config
from .report import Report
from .roundtrip import sqnr_db

#: The cache: the sink chunk, a window of this many chunks, and the chunk being generated.
WINDOW_CHUNKS = 1


@dataclass
class DemoResult:
    device: str
    dtype: str
    chunks: list[dict]
    report: Report
    seconds_bf16: float
    seconds_nvfp4: float
    kv_cache: dict  # tokens per layer, layers, bf16_bytes (those tokens in bf16), nvfp4_bytes (pages in use)

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "chunks": self.chunks,
                "seconds_bf16": self.seconds_bf16, "seconds_nvfp4": self.seconds_nvfp4,
                "kv_cache": self.kv_cache, "report": self.report.to_dict()}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_demo(config: str = "tiny", chunks: int = 4, steps: int = 4, seed: int = 0,
             device: torch.device | None = None, progress: bool = True) -> DemoResult:
    """Generate ``chunks`` chunks with the bf16 model and its NVFP4 compilation from the same noise."""
    device = device or default_device()
    cfg = get_config(config)
    model = build_model(cfg, seed=seed, device=device, dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(seed)
    shape = (1, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    noise = [torch.randn(shape, generator=gen).to(device, torch.bfloat16) for _ in range(chunks)]
    text = torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=gen).to(device, torch.bfloat16)
    model.enable_dense_kv_cache(1, (2 + WINDOW_CHUNKS) * cfg.chunk_tokens, sink_tokens=cfg.chunk_tokens)
    compiled = nvfp4_compile(model, kv_page_size=demo_page_size(cfg.chunk_tokens), dynamic_ints=DENSE_CACHE_DYNAMIC_INTS)

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("generating (bf16, then NVFP4)", total=2 * chunks * steps)
        advance = lambda: bar.advance(task)  # noqa: E731
        start = time.perf_counter()
        reference = generate_dense_cache(model, noise, text, steps=steps, on_step=advance)
        seconds_bf16 = time.perf_counter() - start
        start = time.perf_counter()
        quantized = generate_dense_cache(compiled, noise, text, steps=steps, on_step=advance)
        seconds_nvfp4 = time.perf_counter() - start

    rows = []
    for i, (ref, out) in enumerate(zip(reference, quantized)):
        ref32, out32 = ref.float(), out.float()
        rows.append({
            "chunk": i,
            "frames": f"{i * cfg.chunk_frames}-{(i + 1) * cfg.chunk_frames - 1}",
            "relative_error": float((out32 - ref32).norm() / ref32.norm()),
            "sqnr_db": sqnr_db(ref32, out32),
            "finite": bool(torch.isfinite(out32).all()),
        })
    return DemoResult(str(device), "bfloat16", rows, nvfp4_report(compiled), seconds_bf16, seconds_nvfp4,
                      kv_cache_bytes(model))


def demo_page_size(chunk_tokens: int) -> int:
    """Tokens per NVFP4 page: 64 (what the Hopper decode kernel takes) for real chunks; 16 for the
    small configs, whose chunks (32 tokens for ``tiny``) would leave most of a 64-token page empty."""
    return 64 if chunk_tokens >= 1024 else 16


def kv_cache_bytes(model: torch.nn.Module) -> dict:
    """What each self-attention's KV cache holds after generation: the NVFP4 pages that the
    compiled model wrote, against the same tokens in bf16 (raises if a block's cache was not
    converted: then the demo would not show the envelope it claims)."""
    stores = [store_for(block.self_attn.k_cache) for block in model.blocks]
    if any(store is None for store in stores):
        raise RuntimeError("nvfp4 demo: the nvfp4_kv_cache pass left a self-attention's K/V cache in bf16")
    bf16_per_token = 2 * 2 * stores[0].cache.num_heads * stores[0].cache.head_dim  # K and V, 2 bytes each
    return {"tokens_per_layer": stores[0].written, "layers": len(stores),
            "bf16_bytes": sum(store.written * len(store.seqs) * bf16_per_token for store in stores),
            "nvfp4_bytes": sum(store.cache.nbytes(used_only=True) for store in stores)}
