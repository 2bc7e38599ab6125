"""Chunk-by-chunk video generation with flow matching, LongLive style (no KV cache yet).

Each chunk starts from noise at t=1 and takes ``steps`` Euler steps to t=0, attending to the
clean latents of a frame sink (the first chunk, never dropped) and a rolling window of the most
recent chunks, which are re-encoded as context on every forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def context_for(chunks: list[torch.Tensor], window_chunks: int) -> tuple[torch.Tensor | None, int]:
    """(clean latents to attend to, frame index where they end): the sink plus the last window."""
    if not chunks:
        return None, 0
    kept = chunks if len(chunks) <= 1 + window_chunks else [chunks[0], *chunks[-window_chunks:]]
    frames_before = sum(c.shape[2] for c in chunks)
    return torch.cat(kept, dim=2), frames_before


@torch.no_grad()
def generate(model: Callable, noise: list[torch.Tensor], text: torch.Tensor, *, steps: int = 4,
             window_chunks: int = 1, on_step: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """Denoise each chunk of ``noise`` ([B, C, F, H, W] each) in order; return the clean chunks."""
    chunks: list[torch.Tensor] = []
    times = torch.linspace(1.0, 0.0, steps + 1)
    for chunk_noise in noise:
        # The model places the context's frames just before ``offset`` for RoPE, so once middle
        # chunks are dropped the sink is positioned next to the window (as a rolling cache would).
        context, offset = context_for(chunks, window_chunks)
        x = chunk_noise
        for t, t_next in zip(times[:-1], times[1:]):
            timestep = torch.full((x.shape[0],), float(t) * 1000, device=x.device)
            velocity = model(x, timestep, text, context=context, frame_offset=offset)
            x = x + (t_next - t) * velocity
            if on_step is not None:
                on_step()
        chunks.append(x)
    return chunks
