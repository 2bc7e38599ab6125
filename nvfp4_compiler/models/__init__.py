"""Embedded models: a Wan-style causal video DiT with ``tiny``, ``wan-1.3b`` and ``wan-5b`` configs."""

from .configs import CONFIGS, VideoDiTConfig, get_config
from .wan import DENSE_CACHE_DYNAMIC_INTS, VideoDiT, build_model, example_inputs

__all__ = ["CONFIGS", "DENSE_CACHE_DYNAMIC_INTS", "VideoDiT", "VideoDiTConfig", "build_model", "example_inputs",
           "get_config"]
