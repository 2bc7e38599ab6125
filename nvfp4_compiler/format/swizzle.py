"""Conversion between the plain block-scale layout and the swizzled 128x4 layout.

Native FP4 GEMMs (cuBLAS ``VEC16_UE4M3``, CUTLASS) read block scales in tiles of
128 rows x 4 scale columns, each tile 512 contiguous bytes, where entry (r, c) of
a tile sits at byte ``(r % 32) * 16 + (r // 32) * 4 + c``. The plain layout
``[rows, K/16]`` stays canonical; convert only at the native-kernel boundary.

Layouts (R = rows, C = K/16 scale columns, padded to R' = ceil(R/128)*128, C' = ceil(C/4)*4):
    plain     [R, C]                          float8_e4m3fn
    swizzled  [R'/128, C'/4, 32, 4, 4] flat   float8_e4m3fn, R' * C' entries
"""

from __future__ import annotations

import torch

TILE_ROWS = 128
TILE_COLS = 4


def _ceil_to(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def swizzled_shape(rows: int, cols: int) -> tuple[int, int]:
    """Padded (rows, cols) of the swizzled layout for a plain ``[rows, cols]`` scale matrix."""
    return _ceil_to(rows, TILE_ROWS), _ceil_to(cols, TILE_COLS)


def to_swizzled(scales: torch.Tensor) -> torch.Tensor:
    """Plain ``[R, C]`` scales -> flat swizzled bytes (padding entries are zero)."""
    if scales.dim() != 2:
        raise ValueError(f"scales: expected a 2-D [rows, K/16] tensor, got shape {tuple(scales.shape)}")
    rows, cols = scales.shape
    prow, pcol = swizzled_shape(rows, cols)
    raw = scales.view(torch.uint8)
    padded = torch.zeros(prow, pcol, dtype=torch.uint8, device=scales.device)
    padded[:rows, :cols] = raw
    # row r = r_hi * 32 + r_lo inside a tile; the tile stores (r_lo, r_hi, c).
    tiles = padded.view(prow // TILE_ROWS, 4, 32, pcol // TILE_COLS, TILE_COLS)
    swizzled = tiles.permute(0, 3, 2, 1, 4).contiguous()
    return swizzled.flatten().view(torch.float8_e4m3fn)


def from_swizzled(swizzled: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`to_swizzled`: flat swizzled bytes -> plain ``[rows, cols]`` scales."""
    prow, pcol = swizzled_shape(rows, cols)
    if swizzled.numel() != prow * pcol:
        raise ValueError(
            f"swizzled: expected {prow * pcol} entries for a [{rows}, {cols}] scale matrix, got {swizzled.numel()}"
        )
    raw = swizzled.reshape(-1).view(torch.uint8)
    tiles = raw.view(prow // TILE_ROWS, pcol // TILE_COLS, 32, 4, TILE_COLS)
    padded = tiles.permute(0, 3, 2, 1, 4).reshape(prow, pcol)
    return padded[:rows, :cols].contiguous().view(torch.float8_e4m3fn)
