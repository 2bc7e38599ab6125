"""``Config``: what ``nvfp4.compile`` quantizes and how. Validated on creation."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import torch

from .format.quantize import FLOAT_DTYPES  # the dtypes NVFP4 quantization accepts
ACTIVATION_SCALE_MODES = ("dynamic", "static")
RECIPES = ("nvfp4", "bf16")
BACKENDS = ("auto", "reference", "triton", "native")


@dataclass(frozen=True)
class Config:
    """Options of :func:`nvfp4_compiler.compile`.

    Attributes:
        include: module-name globs of the linears to quantize (``"*"``: all of them).
        exclude: module-name globs to keep in bf16, checked after ``include``
            (e.g. ``("proj_out", "*.time_embed.*")``).
        keep_first_blocks_bf16: keep the linears of the first N transformer blocks in bf16.
        keep_last_blocks_bf16: keep the linears of the last N blocks in bf16 (NVIDIA's recipe
            keeps about 15% of linear layers, mostly at the end, in bf16 for training).
        block_pattern: regular expression whose first group is the block index in a module
            name; the default matches ``blocks.3.``, ``layers.3.`` and ``transformer_blocks.3.``.
        activation_scales: ``"dynamic"`` computes each activation's per-tensor amax per call;
            ``"static"`` uses amax values recorded by :func:`nvfp4_compiler.calibrate`.
        backend: ``"auto"`` picks per device and shape; or force ``"reference"`` (pure PyTorch,
            any device), ``"triton"`` or ``"native"`` (FP4 tensor cores, sm_100+; training graphs
            use the Triton kernels there).
        fuse_epilogues: fold bias, activation, gate/residual and the next quantization's amax
            into each GEMM (turn off to inspect the unfused graph).
        pad_k: quantize linears whose in_features is not a multiple of 16 by zero-padding K;
            off by default, so such layers stay in bf16 and are reported.
        fullgraph: require one graph per forward; a graph break then raises
            :class:`nvfp4_compiler.CaptureError` naming where and why.
        recipe: ``"nvfp4"`` (default) or ``"bf16"`` (nothing quantized: the baseline arm of an
            experiment). Graphs captured with grad enabled train with NVIDIA's NVFP4 recipe:
        weight_tiles_2d, rht_wgrad, stochastic_gradients: the recipe's switches (16x16 weight
            tiles; random Hadamard transform on the wgrad operands; stochastic rounding of
            gradients), all on by default as in NVIDIA's recipe.
        four_over_six: choose each block's E4M3 scale by Four Over Six (the block max mapped to 4
            or to 6, whichever reconstructs the block better; ``nvfp4_compiler.format.four_over_six``)
            for inference weights and activations, and in training for the fprop operands (x and
            W, so W^T in dgrad too). Same format and kernels downstream; off by default (NVIDIA's
            recipe maps to 6). Activation quantization then stays a separate kernel instead of a
            GEMM's quantizing epilogue.
        recompute_activations: in training graphs, fold an activation that follows a linear
            (GELU, SiLU, ReLU) into it and recompute its input in backward from the NVFP4 operands
            (one more forward GEMM) instead of saving it: the FFN's wide hidden tensor is not kept.
        kv_cache: move attention K/V caches the model keeps (slice writes into a buffer, read
            back by the attention) into paged NVFP4 storage (the ``nvfp4_kv_cache`` pass).
        kv_page_size: tokens per page of that storage (a power of two >= 16 runs the Triton kernel).
        dynamic_ints: Python ints the model takes that change from call to call without changing
            what it computes, such as cache positions and frame offsets: forward argument names
            (``"cache_position"``), or Dynamo source patterns for ints elsewhere (a regex such as
            ``r".*\\.cache_local_end"`` for a module attribute). Dynamo keeps them symbolic
            (``torch.compiler.config.dynamic_sources``), so a new value reuses the captured graph
            instead of capturing a new one (otherwise each new value is a new capture: seconds
            for a 30-block model, once per chunk in cached generation).
        inductor: hand each rewritten graph to Inductor, so the ops around the NVFP4
            GEMMs (norms, modulation, RoPE, attention) are fused as under ``torch.compile``;
            ``None`` (default) does so for graphs on CUDA, ``True`` on any device, ``False`` never.
            Training graphs go too (AOTAutograd, then Inductor). Graphs that call the NVFP4 KV
            cache runtime run as captured either way.
        cuda_graphs: with Inductor on, replay each graph as CUDA graphs (as
            ``torch.compile(mode="reduce-overhead")``), training graphs included: removes the
            host cost of launching the NVFP4 kernels from Python on every call. Outputs then live
            in graph-owned memory that the next call overwrites (clone what you keep), as with
            ``reduce-overhead``.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    keep_first_blocks_bf16: int = 0
    keep_last_blocks_bf16: int = 0
    block_pattern: str = r"(?:^|\.)(?:blocks|layers|transformer_blocks)\.(\d+)\."
    activation_scales: str = "dynamic"
    backend: str = "auto"
    fuse_epilogues: bool = True
    pad_k: bool = False
    fullgraph: bool = False
    recipe: str = "nvfp4"
    weight_tiles_2d: bool = True
    rht_wgrad: bool = True
    stochastic_gradients: bool = True
    four_over_six: bool = False
    recompute_activations: bool = True
    kv_cache: bool = True
    kv_page_size: int = 64
    dynamic_ints: tuple[str, ...] = ()
    inductor: bool | None = None
    cuda_graphs: bool = False
    _block_regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, what in (("include", "glob strings"), ("exclude", "glob strings"),
                           ("dynamic_ints", "argument names or source patterns")):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{name}: expected a tuple of {what}, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("keep_first_blocks_bf16", "keep_last_blocks_bf16"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if not isinstance(self.kv_page_size, int) or isinstance(self.kv_page_size, bool) or self.kv_page_size < 1:
            raise ValueError(f"kv_page_size: expected a positive int, got {self.kv_page_size!r}")
        if self.inductor not in (None, True, False):
            raise ValueError(f"inductor: expected None, True or False, got {self.inductor!r}")
        if self.cuda_graphs and self.inductor is False:
            raise ValueError("cuda_graphs: needs Inductor (Config.inductor None or True), got inductor=False")
        if self.activation_scales not in ACTIVATION_SCALE_MODES:
            raise ValueError(f"activation_scales: expected one of {ACTIVATION_SCALE_MODES}, got {self.activation_scales!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe: expected one of {RECIPES}, got {self.recipe!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        try:
            regex = re.compile(self.block_pattern)
        except re.error as err:
            raise ValueError(f"block_pattern: not a valid regular expression ({err})") from None
        if regex.groups < 1:
            raise ValueError("block_pattern: needs one group capturing the block index")
        object.__setattr__(self, "_block_regex", regex)

    def dynamic_sources(self) -> str:
        """``dynamic_ints`` as Dynamo sources (``torch.compiler.config.dynamic_sources``): an
        argument name ``x`` is the source ``L['x']``; anything else is a source pattern already."""
        return ",".join(f"L['{name}']" if name.isidentifier() else name for name in self.dynamic_ints)

    def training_recipe(self):
        """The :class:`nvfp4_compiler.training.Recipe` these switches describe."""
        from .training import Recipe

        kernels = self.backend if self.backend in ("reference", "triton") else "auto"
        return Recipe(self.weight_tiles_2d, self.rht_wgrad, self.stochastic_gradients,
                      four_over_six=self.four_over_six, kernels=kernels)

    def count_blocks(self, module_names) -> int:
        """Number of transformer blocks among ``module_names`` (highest block index + 1)."""
        indices = {self.block_index(name + ".") for name in module_names} - {None}
        return max(indices) + 1 if indices else 0

    def linear_exclusion_reason(self, module_name: str, k: int, dtype: torch.dtype, num_blocks: int,
                                *, allow_pad: bool = True) -> str | None:
        """Why a linear (in_features ``k``, weight ``dtype``) stays in bf16, or None if it is quantized.

        The one set of rules that compile, the eager fallback and checkpoints share; checkpoints
        pass ``allow_pad=False`` because their layout needs K % 16 == 0.
        """
        if dtype not in FLOAT_DTYPES:
            return f"unsupported dtype {dtype}"
        if k % 16 and not (allow_pad and self.pad_k):
            return f"K={k} is not a multiple of 16" + (" (Config.pad_k=False)" if allow_pad else "")
        return self.exclusion_reason(module_name, num_blocks)

    def block_index(self, module_name: str) -> int | None:
        """Index of the transformer block a module belongs to, or None."""
        match = self._block_regex.search(module_name)
        return int(match.group(1)) if match else None

    def exclusion_reason(self, module_name: str, num_blocks: int) -> str | None:
        """Why ``module_name`` stays in bf16 by configuration, or None if it may be quantized."""
        if self.recipe == "bf16":
            return "Config.recipe='bf16' (the unquantized arm)"
        if not any(fnmatch.fnmatchcase(module_name, g) for g in self.include):
            return f"not matched by include={self.include}"
        for pattern in self.exclude:
            if fnmatch.fnmatchcase(module_name, pattern):
                return f"excluded by pattern {pattern!r}"
        index = self.block_index(module_name)
        if index is not None and index < self.keep_first_blocks_bf16:
            return f"block {index} is among the first {self.keep_first_blocks_bf16} kept in bf16"
        if index is not None and index >= num_blocks - self.keep_last_blocks_bf16:
            return f"block {index} is among the last {self.keep_last_blocks_bf16} kept in bf16"
        return None
