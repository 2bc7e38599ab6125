"""``nvfp4 demo``: compile the embedded tiny video DiT, generate chunks, compare against bf16."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.progress import Progress

from .api import compile as nvfp4_compile
from .api import report as nvfp4_report
from .generate import generate
from .models import build_model, get_config
from .report import Report
from .roundtrip import sqnr_db


@dataclass
class DemoResult:
    device: str
    dtype: str
    chunks: list[dict]
    report: Report
    seconds_bf16: float
    seconds_nvfp4: float

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "chunks": self.chunks,
                "seconds_bf16": self.seconds_bf16, "seconds_nvfp4": self.seconds_nvfp4,
                "report": self.report.to_dict()}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_demo(config: str = "tiny", chunks: int = 3, steps: int = 4, seed: int = 0,
             device: torch.device | None = None, progress: bool = True) -> DemoResult:
    """Generate ``chunks`` chunks with the bf16 model and its NVFP4 compilation from the same noise."""
    device = device or default_device()
    cfg = get_config(config)
    model = build_model(cfg, seed=seed, device=device, dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(seed)
    shape = (1, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    noise = [torch.randn(shape, generator=gen).to(device, torch.bfloat16) for _ in range(chunks)]
    text = torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=gen).to(device, torch.bfloat16)
    compiled = nvfp4_compile(model)

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("generating (bf16, then NVFP4)", total=2 * chunks * steps)
        advance = lambda: bar.advance(task)  # noqa: E731
        start = time.perf_counter()
        reference = generate(model, noise, text, steps=steps, on_step=advance)
        seconds_bf16 = time.perf_counter() - start
        start = time.perf_counter()
        quantized = generate(compiled, noise, text, steps=steps, on_step=advance)
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
    return DemoResult(str(device), "bfloat16", rows, nvfp4_report(compiled), seconds_bf16, seconds_nvfp4)
