"""nvfp4_compiler: put a whole video transformer inside one NVFP4 envelope.

    import nvfp4_compiler as nvfp4
    q = nvfp4.quantize(x)                      # NVFP4Tensor: E2M1 data, E4M3 block scales, FP32 scale
    compiled = nvfp4.compile(model)            # every eligible GEMM in NVFP4 (W4A4)
    y = compiled(*inputs)
    print(nvfp4.report(compiled))              # what was quantized, fused, and left out
"""

from ._version import __version__
from .api import NVFP4Module, calibrate, compile, report
from .capture import CaptureError, capture_graphs, export_graph
from .checkpoint import CheckpointError, load
from .config import Config
from .format import NVFP4Tensor, quantize
from .report import Report

__all__ = [
    "CaptureError", "CheckpointError", "Config", "NVFP4Module", "NVFP4Tensor", "Report", "__version__", "calibrate",
    "capture_graphs", "compile", "export_graph", "load", "quantize", "report",
]
