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
