"""An independent NVFP4 quantizer in numpy + ml_dtypes, written from NVFP4_SPEC.md.

It shares no code with ``nvfp4_compiler``: E2M1 and E4M3 rounding come from
``ml_dtypes``' own casts, so agreement with the package is an independent check.
"""

import ml_dtypes
import numpy as np

F32 = np.float32
FLT_MAX = np.finfo(np.float32).max


def quantize_1x16(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """(packed uint8 [..., K/2], e4m3 scales as uint8 [..., K/16], decode scale) for K % 16 == 0."""
    x = x.astype(F32)
    amax = F32(np.abs(x).max())
    with np.errstate(divide="ignore", over="ignore"):
        s_enc = F32(F32(448 * 6) / amax)
    s_enc = F32(min(s_enc, FLT_MAX))
    if s_enc == 0:
        s_enc = F32(1.0)
    s_dec = F32(F32(1) / s_enc)
    r6 = F32(F32(1) / F32(6))
    blocks = x.reshape(*x.shape[:-1], -1, 16)
    with np.errstate(over="ignore"):
        b = np.abs(blocks).max(-1).astype(F32) * F32(s_enc * r6)
    b = np.clip(np.minimum(b, FLT_MAX), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    with np.errstate(divide="ignore", over="ignore"):
        e = np.minimum(F32(1) / (b.astype(F32) * s_dec), FLT_MAX).astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.clip(blocks * e[..., None], -6, 6).astype(F32)
    codes = scaled.astype(ml_dtypes.float4_e2m1fn).view(np.uint8).reshape(x.shape) & 0x0F
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return packed, b.view(np.uint8), s_dec


def _pairwise_sum(t: np.ndarray) -> np.ndarray:
    while t.shape[-1] > 1:
        t = (t[..., 0::2] + t[..., 1::2]).astype(F32)
    return t[..., 0]


def quantize_four_over_six(x: np.ndarray, tile_rows: int = 1) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """Four Over Six (``format.four_over_six``'s definition) for x [M, K], K % 16 == 0 and, with
    16x16 tiles (``tile_rows=16``), M % 16 == 0: (E2M1 values as fp32 [M, K], e4m3 scales as
    uint8 [M, K/16], decode scale). Values, not codes: ml_dtypes' E2M1 cast keeps no -0."""
    x = x.astype(F32)
    m, k = x.shape
    amax = F32(np.abs(x).max())
    s_enc = F32(F32(448 * 6) / amax) if amax > 0 else F32(FLT_MAX)
    s_dec = F32(F32(1) / s_enc)
    blocks = x.reshape(m, k // 16, 16)
    block_amax = np.abs(blocks).max(-1)
    if tile_rows == 16:
        block_amax = np.repeat(block_amax.reshape(m // 16, 16, -1).max(1), 16, axis=0)
    v = (blocks * s_enc).astype(F32)
    candidates = []
    for reciprocal in (F32(F32(1) / F32(6)), F32(0.25)):
        b = np.minimum(block_amax * F32(s_enc * reciprocal), F32(448)).astype(ml_dtypes.float8_e4m3fn)
        bf = b.astype(F32)
        with np.errstate(divide="ignore"):
            e = np.minimum(F32(1) / (bf * s_dec), FLT_MAX).astype(F32)
        q = np.clip(blocks * e[..., None], -6, 6).astype(F32).astype(ml_dtypes.float4_e2m1fn).astype(F32)
        err = _pairwise_sum(np.abs((q * bf[..., None]).astype(F32) - v).astype(F32))
        if tile_rows == 16:
            err = np.repeat(_pairwise_sum(err.reshape(m // 16, 16, -1).transpose(0, 2, 1)), 16, axis=0)
        candidates.append((q, b.view(np.uint8), err))
    (q6, b6, err6), (q4, b4, err4) = candidates
    four = err4 < err6
    return np.where(four[..., None], q4, q6).reshape(m, k), np.where(four, b4, b6), s_dec
