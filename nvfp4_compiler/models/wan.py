"""A Wan-style causal video DiT: the project's own client model.

Per block (Wan2.1): self-attention with qk-RMSNorm and 3D RoPE, cross-attention to text tokens,
a GELU-tanh FFN, with shift/scale/gate modulation from the timestep. Chunk-wise causal: the
tokens of the current chunk attend to themselves and to the clean tokens of earlier chunks
(``context``), as LongLive generates video chunk by chunk.

Tensors (B batch, F frames, T = F * frame_tokens, D = dim, H heads x Dh head_dim):
    latents   [B, C, F, Hl, Wl]     video latents of the current chunk
    tokens    [B, T, D]             the residual stream
    text      [B, L, text_dim]      text embeddings
    timestep  [B]                   flow-matching time in [0, 1000]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configs import VideoDiTConfig


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[B] timesteps -> [B, dim] cos/sin features (Wan's frequency embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_3d_angles(frames: torch.Tensor, height: int, width: int, head_dim: int) -> torch.Tensor:
    """Rotation angles [T, head_dim / 2] for tokens laid out frame-major over (frames, height, width).

    The head dimension is split between time, height and width as in Wan:
    ``head_dim - 4 * (head_dim // 6)`` for time, ``2 * (head_dim // 6)`` each for height and width.
    """
    sixth = head_dim // 6
    split = [head_dim - 4 * sixth, 2 * sixth, 2 * sixth]
    axes = [frames.float(), torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32)]
    parts = []
    for size, pos in zip(split, axes):
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, size, 2, dtype=torch.float32) / size))
        parts.append(pos.to(frames.device)[:, None] * inv_freq.to(frames.device)[None])
    f, h, w = (p.shape[0] for p in parts)
    grid = torch.cat([
        parts[0][:, None, None].expand(f, h, w, -1),
        parts[1][None, :, None].expand(f, h, w, -1),
        parts[2][None, None, :].expand(f, h, w, -1),
    ], dim=-1)
    return grid.reshape(f * h * w, head_dim // 2)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x [B, H, T, Dh] by angles [T, Dh/2]."""
    x_pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = torch.cos(angles)[None, None], torch.sin(angles)[None, None]
    real = x_pairs[..., 0] * cos - x_pairs[..., 1] * sin
    imag = x_pairs[..., 0] * sin + x_pairs[..., 1] * cos
    return torch.stack([real, imag], dim=-1).flatten(-2).type_as(x)


class AttentionProjections(nn.Module):
    """q/k/v/out projections with qk-RMSNorm across all heads, as Wan's attention layers have."""

    def __init__(self, cfg: VideoDiTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.to_q = nn.Linear(cfg.dim, cfg.dim)
        self.to_k = nn.Linear(cfg.dim, cfg.dim)
        self.to_v = nn.Linear(cfg.dim, cfg.dim)
        self.to_out = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = nn.RMSNorm(cfg.dim, eps=cfg.eps)
        self.norm_k = nn.RMSNorm(cfg.dim, eps=cfg.eps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, Dh]."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class SelfAttention(AttentionProjections):
    def forward(self, x: torch.Tensor, angles: torch.Tensor, context: torch.Tensor | None,
                context_angles: torch.Tensor | None, kv=None, cache_position: int | None = None) -> torch.Tensor:
        q = apply_rope(self.heads(self.norm_q(self.to_q(x))), angles)
        k = apply_rope(self.heads(self.norm_k(self.to_k(x))), angles)
        v = self.heads(self.to_v(x))
        if kv is not None:  # earlier chunks' K/V live in an NVFP4 paged cache (LongLive generation)
            return self.to_out(kv.attend(q, k, v).transpose(1, 2).flatten(2))
        if cache_position is not None:  # the dense cache the model keeps (VideoDiT.enable_dense_kv_cache)
            return self.to_out(self._dense_cache_attention(q, k, v, cache_position).transpose(1, 2).flatten(2))
        if context is not None:  # clean tokens of earlier chunks: attended to, never attending back
            k_past = apply_rope(self.heads(self.norm_k(self.to_k(context))), context_angles)
            v_past = self.heads(self.to_v(context))
            k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _dense_cache_attention(self, q, k, v, position: int) -> torch.Tensor:
        """LongLive's cache in dense buffers: the chunk of tokens ``position ..`` is written at its
        place in the buffers and the attention reads the filled prefix. A call for the same chunk
        again (a later denoising step) rewrites it. With a sink (``sink_tokens``), a new chunk that
        does not fit first rolls the buffers: the oldest tokens after the sink are dropped by
        copying the rest down, so the buffers hold the sink plus a rolling window."""
        end = position + k.shape[2]
        local_end = end if self.cache_sink_tokens is None else self._rolled_end(position, end)
        self.k_cache[:, :, local_end - k.shape[2]:local_end] = k
        self.v_cache[:, :, local_end - k.shape[2]:local_end] = v
        return F.scaled_dot_product_attention(q, self.k_cache[:, :, :local_end], self.v_cache[:, :, :local_end])

    def _rolled_end(self, position: int, end: int) -> int:
        """Where the chunk of tokens ``position .. end`` ends in buffers with a sink, rolling them
        first if it is a new chunk that does not fit (LongLive keeps the same two counters: the
        last chunk's end in the sequence and in the buffers)."""
        if position == 0:
            self.cache_global_end, self.cache_local_end = 0, 0
        local_end = self.cache_local_end + end - self.cache_global_end
        if local_end > self.k_cache.shape[2] and end > self.cache_global_end:
            sink, evicted = self.cache_sink_tokens, local_end - self.k_cache.shape[2]
            kept = self.cache_local_end - evicted - sink
            self.k_cache[:, :, sink:sink + kept] = self.k_cache[:, :, sink + evicted:sink + evicted + kept].clone()
            self.v_cache[:, :, sink:sink + kept] = self.v_cache[:, :, sink + evicted:sink + evicted + kept].clone()
            local_end -= evicted
        self.cache_global_end, self.cache_local_end = end, local_end
        return local_end


class CrossAttention(AttentionProjections):
    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        q = self.heads(self.norm_q(self.to_q(x)))
        k = self.heads(self.norm_k(self.to_k(text)))
        v = self.heads(self.to_v(text))
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, cfg: VideoDiTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.down = nn.Linear(cfg.ffn_dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """One Wan block: modulated self-attention, cross-attention, modulated FFN, gated residuals."""

    def __init__(self, cfg: VideoDiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = FeedForward(cfg)
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(self, x, time_mod, text, angles, context=None, context_angles=None, kv=None, cache_position=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + time_mod).unbind(1)
        h = self.norm1(x) * (1 + scale1[:, None]) + shift1[:, None]
        ctx = None if context is None else self.norm1(context) * (1 + scale1[:, None]) + shift1[:, None]
        x = x + self.self_attn(h, angles, ctx, context_angles, kv, cache_position) * gate1[:, None]
        x = x + self.cross_attn(self.norm3(x), text)
        h = self.norm2(x) * (1 + scale2[:, None]) + shift2[:, None]
        return x + self.ffn(h) * gate2[:, None]


#: The ints that change from call to call in generation through the dense KV cache
#: (``generate_dense_cache``): the chunk's cache position and first frame, and with a sink the
#: self-attentions' two counters. ``nvfp4.compile(model, dynamic_ints=DENSE_CACHE_DYNAMIC_INTS)``
#: keeps them symbolic, so the chunks share a few captured graphs instead of each capturing anew.
DENSE_CACHE_DYNAMIC_INTS = ("cache_position", "frame_offset", r".*\.cache_(global|local)_end")


class VideoDiT(nn.Module):
    """Wan-style causal video DiT predicting the flow-matching velocity of a chunk of latents."""

    def __init__(self, cfg: VideoDiTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.dim)
        self.text_embed = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                        nn.Linear(cfg.dim, cfg.dim))
        self.time_embed = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.norm_out = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head_modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)
        self.proj_out = nn.Linear(cfg.dim, cfg.patch_dim)

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, F, Hl, Wl] -> [B, T, C * pt * ph * pw], tokens frame-major."""
        pt, ph, pw = self.cfg.patch_size
        b, c, f, h, w = latents.shape
        x = latents.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (f // pt) * (h // ph) * (w // pw), -1)

    def unpatchify(self, tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        pt, ph, pw = self.cfg.patch_size
        b = tokens.shape[0]
        x = tokens.reshape(b, frames // pt, height // ph, width // pw, -1, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, frames, height, width)

    def enable_dense_kv_cache(self, batch: int, max_tokens: int, sink_tokens: int | None = None) -> None:
        """Give every self-attention dense K/V buffers [batch, heads, max_tokens, head_dim] (the
        LongLive/CausVid way: each call writes its chunk at ``cache_position`` and attends over the
        filled prefix). With ``sink_tokens``, a chunk that does not fit rolls the buffers (LongLive):
        the first ``sink_tokens`` stay, the oldest after them are dropped. ``nvfp4.compile`` moves
        such caches into paged NVFP4 storage."""
        if sink_tokens is not None and not 0 < sink_tokens < max_tokens:
            raise ValueError(f"sink_tokens: expected 0 < sink_tokens < max_tokens = {max_tokens}, got {sink_tokens}")
        for block in self.blocks:
            attn = block.self_attn
            attn.cache_sink_tokens, attn.cache_global_end, attn.cache_local_end = sink_tokens, 0, 0
            shape = (batch, self.cfg.num_heads, max_tokens, self.cfg.head_dim)
            dtype, device = attn.to_k.weight.dtype, attn.to_k.weight.device
            attn.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
            attn.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                context: torch.Tensor | None = None, frame_offset: int = 0, kv_cache=None,
                cache_position: int | None = None) -> torch.Tensor:
        """Velocity for ``latents``. Earlier chunks come as ``context`` (their clean latents,
        re-encoded every call), as ``kv_cache`` (a :class:`nvfp4_compiler.generate.ChunkKVCache`
        holding their K/V in NVFP4 pages), or from the model's own dense buffers with
        ``cache_position`` (the chunk's first token; see :meth:`enable_dense_kv_cache`);
        ``frame_offset`` is the chunk's first frame."""
        b, _, frames, height, width = latents.shape
        pt, ph, pw = self.cfg.patch_size
        x = self.patch_embed(self.patchify(latents))
        temb = self.time_embed(sinusoidal_embedding(timestep, self.cfg.freq_dim).to(x.dtype))
        time_mod = self.time_proj(F.silu(temb)).unflatten(1, (6, -1))
        text_tokens = self.text_embed(text)
        frame_ids = torch.arange(frame_offset, frame_offset + frames // pt, device=latents.device)
        angles = rope_3d_angles(frame_ids, height // ph, width // pw, self.cfg.head_dim)
        ctx, ctx_angles = None, None
        if context is not None:
            ctx = self.patch_embed(self.patchify(context))
            ctx_frames = torch.arange(frame_offset - context.shape[2] // pt, frame_offset, device=latents.device)
            ctx_angles = rope_3d_angles(ctx_frames, height // ph, width // pw, self.cfg.head_dim)
        for i, block in enumerate(self.blocks):
            kv = kv_cache.layer(i) if kv_cache is not None else None
            x = block(x, time_mod, text_tokens, angles, ctx, ctx_angles, kv, cache_position)
        shift, scale = (self.head_modulation + temb[:, None]).unbind(1)
        x = self.norm_out(x) * (1 + scale[:, None]) + shift[:, None]
        return self.unpatchify(self.proj_out(x), frames, height, width)


def build_model(config: str | VideoDiTConfig = "tiny", *, seed: int = 0, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, **overrides) -> VideoDiT:
    """Build the embedded video DiT with random weights (deterministic per ``seed``).

    ``device="meta"`` builds the full-size configs without allocating memory.
    """
    from .configs import get_config

    cfg = get_config(config, **overrides) if isinstance(config, str) else config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = VideoDiT(cfg)
    return model.to(dtype=dtype)


def example_inputs(cfg: VideoDiTConfig, batch: int = 1, frames: int | None = None, *, seed: int = 0,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Random (latents, timestep, text) for one chunk of ``cfg``."""
    gen = torch.Generator().manual_seed(seed)
    frames = cfg.chunk_frames if frames is None else frames
    latents = torch.randn(batch, cfg.in_channels, frames, cfg.latent_height, cfg.latent_width, generator=gen)
    timestep = torch.full((batch,), 500.0)
    text = torch.randn(batch, cfg.text_tokens, cfg.text_dim, generator=gen)
    return latents.to(device, dtype), timestep.to(device), text.to(device, dtype)
