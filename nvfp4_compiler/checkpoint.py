"""NVFP4 checkpoints in the layout NVIDIA Model Optimizer writes (and vLLM / TensorRT-LLM read).

Per quantized linear ``<name>`` (out_features N, in_features K, K % 16 == 0):
    <name>.weight          uint8          [N, K/2]   two E2M1 codes per byte, element 2i low nibble
    <name>.weight_scale    float8_e4m3fn  [N, K/16]  block decode scales
    <name>.weight_scale_2  float32        []         per-tensor *decode* scale (amax / 2688)
    <name>.input_scale     float32        []         activation decode scale, when calibrated
Every other tensor is stored as it was. ``hf_quant_config.json`` names the algorithm (NVFP4), the
group size (16) and the modules kept unquantized. Large models are sharded with the Hugging Face
index convention (``model.safetensors.index.json``).

A checkpoint is written into a temporary folder beside the target and renamed into place only
when complete, so an interrupted or failed write never leaves a folder that looks whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .config import Config
from .format import NVFP4Tensor, quantize
from .format.scales import decode_scale, encode_scale_from_amax

QUANT_CONFIG = "hf_quant_config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
DEFAULT_SHARD_BYTES = 5 * 2**30


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which file and why."""


@dataclass
class RewritePlan:
    """Which linears of a model are quantized, and why the others are not."""

    quantized: list[str]
    excluded: dict[str, str]  # module name -> reason


def plan(model: nn.Module, config: Config) -> RewritePlan:
    """Decide per ``nn.Linear`` (same rules as ``nvfp4.compile``; ``pad_k`` does not apply:
    the checkpoint layout needs K % 16 == 0)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    num_blocks = config.count_blocks(names)
    quantized, excluded = [], {}
    for name in names:
        linear = model.get_submodule(name)
        reason = config.linear_exclusion_reason(name, linear.in_features, linear.weight.dtype, num_blocks,
                                                allow_pad=False)
        if reason is None:
            quantized.append(name)
        else:
            excluded[name] = reason
    return RewritePlan(quantized, excluded)


def quantized_tensors(model: nn.Module, rewrite: RewritePlan, input_amax: dict[str, float] | None = None,
                      on_tensor: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: ModelOpt NVFP4 entries for quantized linears, the rest unchanged."""
    quantized = set(rewrite.quantized)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if module in quantized and leaf == "weight":
            q = quantize(tensor.detach(), block=(1, 16))
            tensors[f"{module}.weight"] = q.data
            tensors[f"{module}.weight_scale"] = q.scale
            tensors[f"{module}.weight_scale_2"] = q.global_scale.reshape(())
            if input_amax and module in input_amax:
                tensors[f"{module}.input_scale"] = _static_decode_scale(input_amax[module])
        else:
            tensors[name] = tensor.detach()
        if on_tensor is not None:
            on_tensor()
    return {k: v.contiguous().cpu() for k, v in tensors.items()}


def _static_decode_scale(amax: float) -> torch.Tensor:
    """The FP32 decode scale a static ``amax`` gives (``input_scale``): 1 / S_enc with
    S_enc = fp32(2688 / amax), as the format computes it, not amax / 2688 rounded once (1 ulp apart
    for some amax)."""
    return decode_scale(encode_scale_from_amax(torch.tensor(amax, dtype=torch.float32)))


def _shards(tensors: dict[str, torch.Tensor], shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    return shards + [current] if current or not shards else shards


def save(model: nn.Module, out_dir: str, config: Config | None = None, *, input_amax: dict[str, float] | None = None,
         shard_bytes: int = DEFAULT_SHARD_BYTES, force: bool = False,
         progress: Callable[[int, int], None] | None = None, extra_files: dict[str, dict] | None = None) -> RewritePlan:
    """Quantize ``model``'s linears and write the checkpoint to ``out_dir`` (see module docstring).

    Raises :class:`CheckpointError` if ``out_dir`` exists (unless ``force``) or cannot be written.
    ``progress(done, total)`` is called as tensors are converted.
    """
    config = config or Config()
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise CheckpointError(f"out: {out_dir} already exists (pass --force / force=True to replace it)")
    parent = os.path.dirname(out_dir)
    if not os.path.isdir(parent):
        raise CheckpointError(f"out: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CheckpointError(f"out: parent folder {parent} is not writable")

    rewrite = plan(model, config)
    total = len(model.state_dict())
    done = [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    tensors = quantized_tensors(model, rewrite, input_amax, tick)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
    try:
        _write(staging, tensors, rewrite, shard_bytes, extra_files or {})
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(staging, out_dir)
    except BaseException:  # KeyboardInterrupt too: never leave the partial folder behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return rewrite


def _write(folder: str, tensors: dict[str, torch.Tensor], rewrite: RewritePlan, shard_bytes: int,
           extra_files: dict[str, dict]) -> None:
    shards = _shards(tensors, shard_bytes)
    metadata = {"format": "pt", "producer": f"nvfp4_compiler {__version__}"}
    if len(shards) == 1:
        save_file(shards[0], os.path.join(folder, SINGLE), metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(folder, fname), metadata=metadata)
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        _write_json(os.path.join(folder, INDEX), {"metadata": {"total_size": total}, "weight_map": weight_map})
    _write_json(os.path.join(folder, QUANT_CONFIG), {
        "producer": {"name": "nvfp4_compiler", "version": __version__},
        "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                         "exclude_modules": sorted(rewrite.excluded)},
    })
    for name, payload in extra_files.items():
        _write_json(os.path.join(folder, name), payload)


def _write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def read_tensors(ckpt_dir: str) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) checkpoint folder."""
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"checkpoint: {ckpt_dir} is not a folder")
    files = [SINGLE] if os.path.exists(os.path.join(ckpt_dir, SINGLE)) else None
    if files is None:
        index = os.path.join(ckpt_dir, INDEX)
        if not os.path.exists(index):
            raise CheckpointError(f"checkpoint: {ckpt_dir} holds neither {SINGLE} nor {INDEX}")
        try:
            files = sorted(set(json.load(open(index))["weight_map"].values()))
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint: {index} is not a valid index ({err})") from None
    tensors = {}
    for fname in files:
        try:
            tensors.update(load_file(os.path.join(ckpt_dir, fname)))
        except Exception as err:  # safetensors raises several types for truncated/corrupt files
            raise CheckpointError(f"checkpoint: cannot read {fname} ({err})") from None
    return tensors


def read_quant_config(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, QUANT_CONFIG)
    try:
        with open(path) as f:
            config = json.load(f)["quantization"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint: {path} is missing") from None
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint: {path} is not a valid quantization config ({err})") from None
    if config.get("quant_algo") != "NVFP4" or config.get("group_size") != 16:
        raise CheckpointError(f"checkpoint: {path} describes {config.get('quant_algo')}/{config.get('group_size')}, "
                              "expected NVFP4 with group size 16")
    return config


def nvfp4_weights(tensors: dict[str, torch.Tensor]) -> dict[str, NVFP4Tensor]:
    """{module name: NVFP4Tensor} for every ModelOpt NVFP4 linear in ``tensors``."""
    out = {}
    for name in tensors:
        if not name.endswith(".weight_scale_2"):
            continue
        module = name.removesuffix(".weight_scale_2")
        data, scale = tensors[f"{module}.weight"], tensors[f"{module}.weight_scale"]
        if data.dtype != torch.uint8 or scale.dtype != torch.float8_e4m3fn or data.shape[1] * 2 != scale.shape[1] * 16:
            raise CheckpointError(f"checkpoint: {module} has inconsistent NVFP4 tensors "
                                  f"(weight {data.dtype} {tuple(data.shape)}, weight_scale {scale.dtype} {tuple(scale.shape)})")
        shape = torch.Size([data.shape[0], data.shape[1] * 2])
        out[module] = NVFP4Tensor(data, scale, tensors[name].reshape(()).float(), shape)
    return out


def load(ckpt_dir: str, model: nn.Module, config: Config | None = None, **overrides):
    """Load an NVFP4 checkpoint into ``model`` and compile it; the stored NVFP4 weights are used
    as they are (not re-quantized), so outputs equal those of the model that was saved, bit for bit.

    The model's quantized linears get the dequantized weights (for anything that reads them in
    bf16/fp32), every other tensor is loaded as stored.
    """
    from .api import compile as nvfp4_compile

    read_quant_config(ckpt_dir)
    tensors = read_tensors(ckpt_dir)
    weights = nvfp4_weights(tensors)
    state = model.state_dict()
    plain = {k: v for k, v in tensors.items()
             if k.rpartition(".")[0] not in weights or k.rpartition(".")[2] == "bias"}
    missing = [k for k in state if k not in plain and k.rpartition(".")[0] not in weights]
    if missing:
        raise CheckpointError(f"checkpoint: {len(missing)} tensors of the model are missing, e.g. {missing[:3]}")
    with torch.no_grad():
        for module_name, q in weights.items():
            linear = model.get_submodule(module_name)
            if tuple(linear.weight.shape) != tuple(q.shape):
                raise CheckpointError(f"checkpoint: {module_name}.weight has shape {tuple(q.shape)}, "
                                      f"the model expects {tuple(linear.weight.shape)}")
            linear.weight.copy_(q.dequantize(linear.weight.dtype))
        model.load_state_dict({k: v for k, v in plain.items() if k in state}, strict=False)
    compiled = nvfp4_compile(model, config, **overrides)
    device = next(model.parameters()).device
    for module_name, q in weights.items():
        compiled.backend.weight_cache.put(model.get_submodule(module_name).weight, q.to(device))
    return compiled
