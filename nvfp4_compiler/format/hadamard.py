"""The 16-point random Hadamard transform (RHT) of NVIDIA's NVFP4 training recipe.

``rht(x) = x.view(-1, 16) @ (diag(s) @ H16) / 4`` along the last dimension, with
H16 the Sylvester Hadamard matrix and ``s`` the recipe's fixed sign vector. The
matrix is orthogonal, so the inverse is its transpose, and applying it to both
operands of a GEMM along the reduction dimension cancels in the product.

The product is evaluated in one fixed order, the fast Walsh-Hadamard butterfly
(signs, then four add/subtract stages, then the exact x1/4), not by a matmul whose
fp32 summation order belongs to the BLAS library: every backend (the Triton kernel
included) reproduces these bits.
"""

from __future__ import annotations

import torch

#: The recipe's fixed random signs (NVFP4_SPEC.md, "Training recipe").
RHT_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)
RHT_SIZE = 16


def sylvester_hadamard(n: int) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix (entries ±1), n a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"n: expected a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def rht_matrix(device: torch.device | str = "cpu") -> torch.Tensor:
    """``diag(s) @ H16 / 4`` as fp32: orthogonal, entries ±1/4."""
    signs = torch.tensor(RHT_SIGNS, dtype=torch.float32)
    return (torch.diag(signs) @ sylvester_hadamard(RHT_SIZE) / 4).to(device)


def _groups(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % RHT_SIZE:
        raise ValueError(f"x: last dimension must be a multiple of {RHT_SIZE} for the RHT, got {x.shape[-1]}")
    return x.to(torch.float32).reshape(-1, RHT_SIZE)


def hadamard_butterfly(groups: torch.Tensor) -> torch.Tensor:
    """``groups @ H16`` for fp32 rows of 16, in butterfly order: stage h pairs element i with
    i + h inside blocks of 2h and writes (a + b, a - b), for h = 1, 2, 4, 8."""
    g = groups
    for h in (1, 2, 4, 8):
        pairs = g.reshape(-1, RHT_SIZE // (2 * h), 2, h)
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        g = torch.stack([a + b, a - b], dim=2).reshape(-1, RHT_SIZE)
    return g


def _signs(device) -> torch.Tensor:
    return torch.tensor(RHT_SIGNS, dtype=torch.float32, device=device)


def rht(x: torch.Tensor) -> torch.Tensor:
    """Apply the RHT to each group of 16 along the last dimension (fp32 result)."""
    groups = _groups(x)
    return (hadamard_butterfly(groups * _signs(x.device)) * 0.25).reshape(x.shape)


def inverse_rht(y: torch.Tensor) -> torch.Tensor:
    """Undo :func:`rht`: ``y @ (H16 @ diag(s)) / 4``, the transpose of the orthogonal matrix."""
    groups = _groups(y)
    return (hadamard_butterfly(groups) * 0.25 * _signs(y.device)).reshape(y.shape)
