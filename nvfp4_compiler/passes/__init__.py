"""Graph passes, one concern per file; ``nvfp4_compiler.pipeline`` runs them in order."""

from .base import AttentionSite, Boundary, CompileContext, GemmSite, PassResult
from .fuse_epilogues import fuse_epilogues
from .kv_cache import nvfp4_kv_cache
from .lower import lower
from .quantize_gemms import quantize_gemms

__all__ = ["AttentionSite", "Boundary", "CompileContext", "GemmSite", "PassResult", "fuse_epilogues", "lower",
           "nvfp4_kv_cache", "quantize_gemms"]
