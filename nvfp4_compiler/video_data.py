"""Procedurally generated training video: bouncing shapes, varied colours, sizes and speeds.

Each sample is a clip [C, F, H, W] of one shape (square, disc or cross) moving with constant
velocity and bouncing off the borders, on a dark background; its class is the shape kind and
whether it moves mostly horizontally or vertically (6 classes). Clips are reproducible from
(seed, index), so every arm of an experiment sees the same data.
"""

from __future__ import annotations

import torch

SHAPES = ("square", "disc", "cross")
NUM_CLASSES = 2 * len(SHAPES)


def _mask(kind: str, yy: torch.Tensor, xx: torch.Tensor, cy: float, cx: float, r: float) -> torch.Tensor:
    if kind == "square":
        return ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
    if kind == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return (((yy - cy).abs() <= r / 3) & ((xx - cx).abs() <= r)) | (((xx - cx).abs() <= r / 3) & ((yy - cy).abs() <= r))


def _bounce(p: float, v: float, lo: float, hi: float) -> tuple[float, float]:
    p += v
    if p < lo or p > hi:
        v = -v
        p = min(max(p, lo), hi)
    return p, v


def clip(index: int, *, channels: int, frames: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """(video [C, F, H, W] in [-1, 1], class label) of sample ``index``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    u = lambda: float(torch.rand((), generator=gen))  # noqa: E731
    kind = SHAPES[int(torch.randint(len(SHAPES), (), generator=gen))]
    r = 1.0 + u() * min(height, width) / 6
    cy, cx = r + u() * (height - 2 * r), r + u() * (width - 2 * r)
    speed = 0.3 + 1.2 * u()
    horizontal = u() < 0.5
    vy, vx = (speed * (u() - 0.5), speed) if horizontal else (speed, speed * (u() - 0.5))
    colour = torch.rand(channels, generator=gen) * 2 - 1
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    video = torch.full((channels, frames, height, width), -0.8)
    for f in range(frames):
        m = _mask(kind, yy, xx, cy, cx, r)
        video[:, f][:, m] = colour[:, None]
        cy, vy = _bounce(cy, vy, r, height - 1 - r)
        cx, vx = _bounce(cx, vx, r, width - 1 - r)
    return video, SHAPES.index(kind) * 2 + int(horizontal)


def batch(indices, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked clips and labels for ``indices``."""
    clips, labels = zip(*(clip(i, **kwargs) for i in indices))
    return torch.stack(clips), torch.tensor(labels)
