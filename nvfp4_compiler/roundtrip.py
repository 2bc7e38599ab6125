"""A quick look at NVFP4 round-trip quality on typical tensor distributions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .format import quantize


@dataclass(frozen=True)
class RoundTripRow:
    distribution: str
    block: str
    sqnr_db: float
    max_abs_error: float
    bf16_bytes: int
    nvfp4_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(|ref| / |ref - approx|)."""
    noise = (reference - approx).float().norm()
    if noise == 0:
        return float("inf")
    return float(20 * torch.log10(reference.float().norm() / noise))


def _samples(shape: tuple[int, int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    gaussian = torch.randn(shape, generator=gen)
    outliers = gaussian.clone()
    outliers.view(-1)[:: 997] *= 50  # LLM/DiT activations: a few channels far above the rest
    return {
        "gaussian": gaussian,
        "uniform": torch.rand(shape, generator=gen) * 2 - 1,
        "student-t (df=3)": torch.distributions.StudentT(3.0).sample(shape),
        "gaussian + 0.1% outliers x50": outliers,
    }


def roundtrip_table(shape: tuple[int, int] = (256, 1024), seed: int = 0) -> list[RoundTripRow]:
    """Quantize-dequantize a few distributions with both block shapes; report error and bytes."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rows = []
    for name, x in _samples(shape, gen).items():
        for block in [(1, 16), (16, 16)]:
            q = quantize(x.to(torch.bfloat16), block=block)
            x_hat = q.dequantize()
            rows.append(RoundTripRow(
                name, f"{block[0]}x{block[1]}", sqnr_db(x.bfloat16().float(), x_hat),
                float((x.bfloat16().float() - x_hat).abs().max()), 2 * x.numel(), q.nbytes,
            ))
    return rows
