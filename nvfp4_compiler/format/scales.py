"""The two NVFP4 scale levels: the FP32 per-tensor scale and the E4M3 block scales.

All arithmetic is fp32 and in the order NVFP4_SPEC.md writes it, so that every
backend (this reference, Triton kernels, exported checkpoints) lands on the same
bits. Names say which direction a scale goes:

- *encode* scale ``S_enc = 2688 / amax`` multiplies data into the E4M3 range,
- *decode* scale ``S_dec = 1 / S_enc`` (the "global scale", checkpoints'
  ``weight_scale_2``) multiplies quantized values back.
"""

from __future__ import annotations

import torch

E4M3_MAX = 448.0
FP4_MAX = 6.0
FLT_MAX = torch.finfo(torch.float32).max
#: fp32 reciprocal of 6, used exactly as the spec's ``r6``.
RECIPROCAL_6 = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(6.0, dtype=torch.float32)


def encode_scale_from_amax(amax: torch.Tensor) -> torch.Tensor:
    """Per-tensor encode scale ``S_enc = (448 * 6) / amax`` (fp32 0-d).

    ``amax == 0`` gives ``FLT_MAX`` (everything is zero anyway); ``amax == inf``
    gives 1.0, so infinite inputs saturate instead of producing NaN.
    """
    amax = amax.to(torch.float32)
    s_enc = torch.tensor(E4M3_MAX * FP4_MAX, dtype=torch.float32, device=amax.device) / amax
    s_enc = torch.clamp(s_enc, max=FLT_MAX)
    return torch.where(s_enc == 0, torch.ones_like(s_enc), s_enc)


def decode_scale(s_enc: torch.Tensor) -> torch.Tensor:
    """``S_dec = 1 / S_enc`` in fp32: the scale stored beside NVFP4 data."""
    return torch.ones_like(s_enc) / s_enc


def block_decode_scales(block_amax: torch.Tensor, s_enc: torch.Tensor,
                        reciprocal: torch.Tensor = RECIPROCAL_6) -> torch.Tensor:
    """E4M3 block decode scales ``b = e4m3(clamp(block_amax * (S_enc * r6)))``; another fp32
    ``reciprocal`` maps the block max to 1 / reciprocal instead of 6 (Four Over Six's 0.25)."""
    factor = s_enc * reciprocal.to(s_enc.device)
    b = block_amax.to(torch.float32) * factor
    b = torch.clamp(torch.clamp(b, max=FLT_MAX), -E4M3_MAX, E4M3_MAX)
    return b.to(torch.float8_e4m3fn)


def element_encode_multiplier(b: torch.Tensor, s_dec: torch.Tensor) -> torch.Tensor:
    """``e = min(1 / (float(b) * S_dec), FLT_MAX)``; a zero block scale gives ``FLT_MAX``."""
    denom = b.to(torch.float32) * s_dec
    return torch.clamp(torch.ones_like(denom) / denom, max=FLT_MAX)
