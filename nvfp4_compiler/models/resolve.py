"""Turn a MODEL argument of the CLI into an ``nn.Module`` (and example inputs when known).

MODEL is one of:
    a built-in name            tiny, wan-1.3b, wan-5b (random weights; --seed)
    package.module:factory     a callable returning an nn.Module; if the module also defines
                               ``example_inputs(model)``, inspect uses it
    a local folder             a diffusers model (config.json with "_class_name") or a
                               transformers model (config.json with "architectures")
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .configs import CONFIGS


class ModelSpecError(ValueError):
    """MODEL could not be turned into a model; the message says why."""


@dataclass
class ResolvedModel:
    model: nn.Module
    description: str
    example_inputs: tuple | None = None      # positional args for one forward, when known
    example_kwargs: dict | None = None


def resolve(spec: str, *, seed: int = 0, with_inputs: bool = False) -> ResolvedModel:
    """Build the model that ``spec`` names (see the module docstring)."""
    if spec in CONFIGS:
        return _builtin(spec, seed, with_inputs)
    if os.path.isdir(spec):
        return _folder(spec, with_inputs)
    if ":" in spec and not os.path.exists(spec):
        return _factory(spec, with_inputs)
    raise ModelSpecError(
        f"MODEL: {spec!r} is not a built-in name ({', '.join(CONFIGS)}), a package.module:factory, or a model folder"
    )


def _builtin(name: str, seed: int, with_inputs: bool) -> ResolvedModel:
    from .wan import build_model, example_inputs

    model = build_model(name, seed=seed).eval()
    inputs = example_inputs(model.cfg) if with_inputs else None
    return ResolvedModel(model, f"built-in {name} (seed {seed})", inputs)


def _factory(spec: str, with_inputs: bool) -> ResolvedModel:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelSpecError(f"MODEL: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(f"MODEL: {module_name!r} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as err:  # the user's factory may raise anything
        raise ModelSpecError(f"MODEL: {spec} raised {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"MODEL: {spec} returned {type(model).__name__}, expected an nn.Module")
    inputs = None
    if with_inputs and hasattr(module, "example_inputs"):
        inputs = tuple(module.example_inputs(model))
    return ResolvedModel(model.eval(), f"{spec}", inputs)


def _folder(path: str, with_inputs: bool) -> ResolvedModel:
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            config: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise ModelSpecError(f"MODEL: {path} has no config.json") from None
    except ValueError as err:
        raise ModelSpecError(f"MODEL: {config_path} is not valid JSON ({err})") from None
    try:
        if "_class_name" in config:
            import diffusers

            cls = getattr(diffusers, config["_class_name"], None)
            if cls is None:
                raise ModelSpecError(f"MODEL: diffusers has no class {config['_class_name']!r}")
            model = cls.from_pretrained(path)
            inputs = _wan_inputs(config) if with_inputs and config["_class_name"] == "WanTransformer3DModel" else None
            return ResolvedModel(model.eval(), f"diffusers {config['_class_name']} from {path}", inputs)
        if "architectures" in config:
            import transformers

            model = transformers.AutoModel.from_pretrained(path)
            return ResolvedModel(model.eval(), f"transformers {config['architectures'][0]} from {path}")
    except ModelSpecError:
        raise
    except Exception as err:  # missing or corrupt weights, unknown architecture...
        raise ModelSpecError(f"MODEL: cannot load {path} ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    raise ModelSpecError(f"MODEL: {config_path} names neither a diffusers class nor a transformers architecture")


def _wan_inputs(config: dict) -> tuple:
    """One small chunk for a diffusers WanTransformer3DModel."""
    gen = torch.Generator().manual_seed(0)
    channels = config.get("in_channels", 16)
    latents = torch.randn(1, channels, 2, 8, 8, generator=gen)
    text = torch.randn(1, 8, config.get("text_dim", 4096), generator=gen)
    return latents, torch.tensor([500]), text
