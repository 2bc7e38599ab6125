"""Graph passes, one concern per file; ``nvfp4_compiler.pipeline`` runs them in order."""

from .base import Boundary, CompileContext, GemmSite, PassResult
from .fuse_epilogues import fuse_epilogues
from .lower import lower
from .quantize_gemms import quantize_gemms

__all__ = ["Boundary", "CompileContext", "GemmSite", "PassResult", "fuse_epilogues", "lower", "quantize_gemms"]
