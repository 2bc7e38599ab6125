"""Configurations of the embedded Wan-style video DiT (shapes from DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class VideoDiTConfig:
    """Shapes of a Wan-style causal video diffusion transformer.

    ``frame_tokens`` is the number of latent tokens per frame after patching
    (height / patch_h * width / patch_w); a chunk is ``chunk_frames`` frames.
    """

    name: str
    dim: int
    ffn_dim: int
    num_heads: int
    head_dim: int
    num_layers: int
    in_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    text_tokens: int = 512
    freq_dim: int = 256
    latent_height: int = 60
    latent_width: int = 104
    chunk_frames: int = 3
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim != self.num_heads * self.head_dim:
            raise ValueError(f"dim: expected num_heads * head_dim = {self.num_heads * self.head_dim}, got {self.dim}")
        if self.head_dim % 6 and self.head_dim % 2:
            raise ValueError(f"head_dim: expected an even number for 3D RoPE, got {self.head_dim}")

    @property
    def frame_tokens(self) -> int:
        _, ph, pw = self.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    @property
    def chunk_tokens(self) -> int:
        return self.chunk_frames * self.frame_tokens

    @property
    def patch_dim(self) -> int:
        pt, ph, pw = self.patch_size
        return self.in_channels * pt * ph * pw


CONFIGS = {
    # Runs in seconds on a CPU: 2 blocks, 4 frames of 4x4 latent pixels per chunk (16 tokens a frame).
    "tiny": VideoDiTConfig(
        "tiny", dim=64, ffn_dim=128, num_heads=2, head_dim=32, num_layers=2, in_channels=4,
        text_dim=32, text_tokens=8, freq_dim=32, latent_height=8, latent_width=8, chunk_frames=2,
    ),
    # Wan2.1-1.3B as used by LongLive: 3 latent frames x 1560 tokens = 4680 tokens per chunk.
    "wan-1.3b": VideoDiTConfig(
        "wan-1.3b", dim=1536, ffn_dim=8960, num_heads=12, head_dim=128, num_layers=30,
        latent_height=60, latent_width=104, chunk_frames=3,
    ),
    # Wan2.2-TI2V-5B as used by LongLive-2.0: 8 latent frames x 880 tokens = 7040 tokens per chunk.
    "wan-5b": VideoDiTConfig(
        "wan-5b", dim=3072, ffn_dim=14336, num_heads=24, head_dim=128, num_layers=30, in_channels=48,
        latent_height=44, latent_width=80, chunk_frames=8,
    ),
}


def get_config(name: str, **overrides) -> VideoDiTConfig:
    """A named configuration, optionally with fields replaced (``num_layers=2``...)."""
    if name not in CONFIGS:
        raise ValueError(f"name: expected one of {sorted(CONFIGS)}, got {name!r}")
    return replace(CONFIGS[name], **overrides) if overrides else CONFIGS[name]
