"""The 16-point random Hadamard transform (RHT) of NVIDIA's NVFP4 training recipe.

``rht(x) = x.view(-1, 16) @ (diag(s) @ H16) / 4`` along the last dimension, with
H16 the Sylvester Hadamard matrix and ``s`` the recipe's fixed sign vector. The
matrix is orthogonal, so the inverse is its transpose, and applying it to both
operands of a GEMM along the reduction dimension cancels in the product.
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


def _apply_along_last(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % RHT_SIZE:
        raise ValueError(f"x: last dimension must be a multiple of {RHT_SIZE} for the RHT, got {x.shape[-1]}")
    groups = x.to(torch.float32).reshape(-1, RHT_SIZE)
    return (groups @ matrix.to(x.device)).reshape(x.shape)


def rht(x: torch.Tensor) -> torch.Tensor:
    """Apply the RHT to each group of 16 along the last dimension (fp32 result)."""
    return _apply_along_last(x, rht_matrix())


def inverse_rht(y: torch.Tensor) -> torch.Tensor:
    """Undo :func:`rht` (the transpose of an orthogonal matrix is its inverse)."""
    return _apply_along_last(y, rht_matrix().T)
