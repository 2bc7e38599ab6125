"""The NVFP4 format: one definition (NVFP4_SPEC.md) that every backend matches bit for bit."""

from .e2m1 import E2M1_MAGNITUDES, e2m1_decode, e2m1_encode, e2m1_encode_stochastic, pack_nibbles, unpack_nibbles
from .hadamard import inverse_rht, rht, rht_matrix
from .quantize import quantize, quantize_slices
from .scales import block_decode_scales, decode_scale, element_encode_multiplier, encode_scale_from_amax
from .swizzle import from_swizzled, to_swizzled
from .tensor import BLOCK_1D, BLOCK_2D, NVFP4Tensor, padded_k

__all__ = [
    "BLOCK_1D", "BLOCK_2D", "E2M1_MAGNITUDES", "NVFP4Tensor", "block_decode_scales", "decode_scale",
    "e2m1_decode", "e2m1_encode", "e2m1_encode_stochastic", "element_encode_multiplier",
    "encode_scale_from_amax", "from_swizzled", "inverse_rht", "pack_nibbles", "padded_k", "quantize", "quantize_slices",
    "rht", "rht_matrix", "to_swizzled", "unpack_nibbles",
]
