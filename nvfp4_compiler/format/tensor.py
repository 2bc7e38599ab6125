"""``NVFP4Tensor``: packed E2M1 data, E4M3 block scales and an FP32 decode scale.

Layout of a tensor with logical shape ``[..., K]`` (K padded with zeros to Kp, a multiple of 16):
    data          [..., Kp/2]   uint8           two E2M1 codes per byte, element 2i in the low nibble
    scale         [..., Kp/16]  float8_e4m3fn   block decode scales; for 16x16 tiles every
                                                data row holds its tile's scale (rows repeat)
    global_scale  []            float32         per-tensor decode scale S_dec = amax / 2688
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .e2m1 import e2m1_decode, pack_nibbles, unpack_nibbles
from .hadamard import inverse_rht
from .swizzle import from_swizzled, to_swizzled

BLOCK_1D = (1, 16)
BLOCK_2D = (16, 16)
SUPPORTED_BLOCKS = (BLOCK_1D, BLOCK_2D)
BLOCK_SIZE = 16


def padded_k(k: int) -> int:
    """K rounded up to the next multiple of 16 (the block size)."""
    return (k + BLOCK_SIZE - 1) // BLOCK_SIZE * BLOCK_SIZE


@dataclass(frozen=True)
class NVFP4Tensor:
    """A tensor quantized to NVFP4 (see the module docstring for the layout).

    Build one with :func:`nvfp4_compiler.quantize`; read it back with
    :meth:`dequantize`. ``rht`` records that the values were Hadamard-transformed
    along K before quantization (training recipe, wgrad operands).
    """

    data: torch.Tensor
    scale: torch.Tensor
    global_scale: torch.Tensor
    shape: torch.Size
    block: tuple[int, int] = BLOCK_1D
    rht: bool = False

    @property
    def padded_k(self) -> int:
        """Length of the stored last dimension (logical K rounded up to a multiple of 16)."""
        return self.data.shape[-1] * 2 if self.data.dim() else 0

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes of storage: packed data + block scales + the 4-byte per-tensor scale."""
        return self.data.numel() + self.scale.numel() + 4

    def dequantize(self, dtype: torch.dtype = torch.float32, *, undo_rht: bool = True) -> torch.Tensor:
        """Values ``E2M1(q) * b * S_dec`` in ``dtype``, with the logical shape.

        With ``undo_rht=False`` a Hadamard-transformed tensor is returned in the
        transformed domain, which is what a GEMM with a transformed partner needs.
        """
        if self.data.numel() == 0:
            return torch.zeros(self.shape, dtype=dtype, device=self.device)
        values = e2m1_decode(unpack_nibbles(self.data))
        blocks = values.view(*values.shape[:-1], -1, BLOCK_SIZE)
        scaled = blocks * self.scale.to(torch.float32).unsqueeze(-1) * self.global_scale
        out = scaled.flatten(-2)
        if self.rht and undo_rht:
            out = inverse_rht(out)
        return out[..., : self.shape[-1]].to(dtype)

    def to(self, device: torch.device | str) -> "NVFP4Tensor":
        """The same tensor on another device."""
        return NVFP4Tensor(
            self.data.to(device), self.scale.to(device), self.global_scale.to(device),
            self.shape, self.block, self.rht,
        )

    def transpose_tiles(self) -> "NVFP4Tensor":
        """The 2-D tensor with 16x16 tiles as its transpose, also in 16x16 tiles: the same values,
        bit for bit what quantizing the transpose (rows padded to 16) gives, without re-reading it.

        Codes are moved, not re-rounded: each 16x16 tile keeps its one scale and the per-tensor
        scale is unchanged. The logical shape becomes [K padded to 16, N].
        """
        if self.block != BLOCK_2D or self.data.dim() != 2 or self.rht:
            raise ValueError(f"transpose_tiles: needs a 2-D tensor with 16x16 tiles and no RHT, got block "
                             f"{self.block}, shape {tuple(self.shape)}, rht={self.rht}")
        data = pack_nibbles(unpack_nibbles(self.data).T.contiguous())
        tile_scales = self.scale.view(torch.uint8)[::BLOCK_SIZE]   # [N/16, Kp/16]: one row per tile row
        scale = tile_scales.T.repeat_interleave(BLOCK_SIZE, dim=0).view(self.scale.dtype)  # [Kp, N/16]
        return NVFP4Tensor(data, scale, self.global_scale, torch.Size([self.padded_k, self.shape[0]]), BLOCK_2D)

    def swizzled_scale(self) -> torch.Tensor:
        """Block scales in the 128x4 swizzled layout native FP4 GEMMs read (flat)."""
        return to_swizzled(self.scale.reshape(-1, self.scale.shape[-1]))

    @classmethod
    def from_swizzled(
        cls,
        data: torch.Tensor,
        swizzled_scale: torch.Tensor,
        global_scale: torch.Tensor,
        shape: torch.Size | tuple[int, ...],
        block: tuple[int, int] = BLOCK_1D,
        rht: bool = False,
    ) -> "NVFP4Tensor":
        """Rebuild a tensor whose block scales are in the swizzled layout."""
        rows = data.numel() // max(data.shape[-1], 1)
        cols = data.shape[-1] // (BLOCK_SIZE // 2)
        plain = from_swizzled(swizzled_scale, rows, cols).view(*data.shape[:-1], cols)
        return cls(data, plain, global_scale, torch.Size(shape), tuple(block), rht)

    def __repr__(self) -> str:
        k = self.shape[-1] if len(self.shape) else 0
        pad = f", K padded {k}->{self.padded_k}" if self.padded_k != k else ""
        gs = float(self.global_scale) if self.global_scale.numel() else float("nan")
        bf16_bytes = 2 * int(torch.Size(self.shape).numel())
        return (
            f"NVFP4Tensor(shape={tuple(self.shape)}, block={self.block[0]}x{self.block[1]}{pad}, "
            f"global_scale={gs:.4g}, rht={self.rht}, device={self.device}, "
            f"{self.nbytes} bytes vs {bf16_bytes} in bf16)"
        )
