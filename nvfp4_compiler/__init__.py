"""nvfp4_compiler: put a whole video transformer inside one NVFP4 envelope.

    import nvfp4_compiler as nvfp4
    q = nvfp4.quantize(x)            # NVFP4Tensor: E2M1 data, E4M3 block scales, FP32 scale
    x_hat = q.dequantize()
"""

from .format import NVFP4Tensor, quantize

__version__ = "0.1.0"
__all__ = ["NVFP4Tensor", "quantize", "__version__"]
