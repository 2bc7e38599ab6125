"""NVFP4 checkpoints: Model Optimizer layout, bit-exact load, sharding, and failure safety."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import nvfp4_compiler as nvfp4
from nvfp4_compiler import checkpoint
from nvfp4_compiler.models import build_model, example_inputs

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def _spec_dequantize(weight: torch.Tensor, weight_scale: torch.Tensor, weight_scale_2: torch.Tensor) -> np.ndarray:
    """Only the spec's formulas: nibbles (2i low, 2i+1 high) -> E2M1 table x E4M3 block scale x FP32 scale."""
    packed = weight.numpy()
    codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1)
    values = E2M1[codes].reshape(codes.shape[0], -1, 16)
    block = weight_scale.float().numpy()[:, :, None]
    return (values * block * weight_scale_2.float().numpy()).reshape(codes.shape[0], -1)


@pytest.fixture
def tiny():
    return build_model("tiny").eval()


def test_layout_and_values_match_what_the_compiled_model_uses(tiny, tmp_path):
    out = tmp_path / "ckpt"
    plan = checkpoint.save(tiny, str(out), nvfp4.Config(exclude=("proj_out",)))
    tensors = load_file(str(out / "model.safetensors"))
    assert plan.excluded == {"proj_out": "excluded by pattern 'proj_out'"}
    assert tensors["proj_out.weight"].dtype == torch.float32  # kept as it was
    w = tensors["blocks.0.ffn.up.weight"]
    assert w.dtype == torch.uint8 and tuple(w.shape) == (128, 32)
    assert tensors["blocks.0.ffn.up.weight_scale"].dtype == torch.float8_e4m3fn
    assert tuple(tensors["blocks.0.ffn.up.weight_scale"].shape) == (128, 4)
    assert tensors["blocks.0.ffn.up.weight_scale_2"].dtype == torch.float32
    assert tensors["blocks.0.ffn.up.weight_scale_2"].dim() == 0
    assert torch.equal(tensors["blocks.0.ffn.up.bias"], tiny.blocks[0].ffn.up.bias)
    quant = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert quant == {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16, "exclude_modules": ["proj_out"]}

    compiled = nvfp4.compile(tiny)
    for name in ["blocks.0.ffn.up", "patch_embed", "blocks.1.self_attn.to_q"]:
        used = compiled.backend.weight_cache.get(tiny.get_submodule(name).weight).dequantize()
        spec = _spec_dequantize(tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"], tensors[f"{name}.weight_scale_2"])
        np.testing.assert_array_equal(spec, used.numpy())


def test_load_gives_the_saved_models_outputs_bit_for_bit(tiny, tmp_path):
    inputs = example_inputs(tiny.cfg)
    with torch.no_grad():
        expected = nvfp4.compile(tiny)(*inputs)
        checkpoint.save(tiny, str(tmp_path / "ckpt"))
        torch._dynamo.reset()
        other = build_model("tiny", seed=123).eval()  # different weights until loaded
        loaded = nvfp4.load(str(tmp_path / "ckpt"), other)
        assert torch.equal(loaded(*inputs), expected)


def test_sharded_checkpoint_round_trips(tiny, tmp_path):
    out = tmp_path / "sharded"
    checkpoint.save(tiny, str(out), shard_bytes=16 * 1024)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and all((out / s).exists() for s in shards)
    assert not (out / "model.safetensors").exists()
    assert set(checkpoint.read_tensors(str(out))) == set(index["weight_map"])


def test_existing_output_needs_force(tiny, tmp_path):
    out = tmp_path / "ckpt"
    checkpoint.save(tiny, str(out))
    with pytest.raises(checkpoint.CheckpointError, match="already exists"):
        checkpoint.save(tiny, str(out))
    checkpoint.save(tiny, str(out), nvfp4.Config(exclude=("*",)), force=True)
    assert "blocks.0.ffn.up.weight_scale" not in checkpoint.read_tensors(str(out))


def test_unwritable_or_missing_parent_is_an_error(tiny, tmp_path, monkeypatch):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.save(tiny, str(tmp_path / "missing" / "ckpt"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root: simulate it
    with pytest.raises(checkpoint.CheckpointError, match="not writable"):
        checkpoint.save(tiny, str(tmp_path / "ckpt"))


def test_interrupted_write_leaves_nothing_that_looks_whole(tiny, tmp_path, monkeypatch):
    calls = []

    def interrupted_save_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the first shard
        from safetensors.torch import save_file

        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", interrupted_save_file)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tiny, str(tmp_path / "ckpt"), shard_bytes=16 * 1024)
    assert len(calls) == 2
    assert os.listdir(tmp_path) == []  # neither the target nor the staging folder


def test_corrupt_or_incomplete_checkpoints_are_reported(tiny, tmp_path):
    out = tmp_path / "ckpt"
    checkpoint.save(tiny, str(out))
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="cannot read model.safetensors"):
        nvfp4.load(str(out), tiny)
    (out / "hf_quant_config.json").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="hf_quant_config.json is missing"):
        nvfp4.load(str(out), tiny)
    with pytest.raises(checkpoint.CheckpointError, match="not a folder"):
        checkpoint.read_tensors(str(tmp_path / "nothing"))


def test_loading_into_the_wrong_model_names_the_mismatch(tiny, tmp_path):
    checkpoint.save(tiny, str(tmp_path / "ckpt"))
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        nvfp4.load(str(tmp_path / "ckpt"), torch.nn.Sequential(torch.nn.Linear(16, 16)))
