"""Procedural video data and the two-arm trainer (`nvfp4 train`), at a size that runs in seconds."""

import json

import torch
from typer.testing import CliRunner

from nvfp4_compiler.cli import app
from nvfp4_compiler.video_data import NUM_CLASSES, batch, clip


def test_clips_are_reproducible_moving_and_labelled():
    a, label = clip(3, channels=4, frames=4, height=16, width=16, seed=1)
    b, _ = clip(3, channels=4, frames=4, height=16, width=16, seed=1)
    assert torch.equal(a, b) and 0 <= label < NUM_CLASSES
    assert not torch.equal(a[:, 0], a[:, -1])  # the shape moves
    x, y = batch(range(40), channels=4, frames=2, height=8, width=8)
    assert x.shape == (40, 4, 2, 8, 8) and len(set(y.tolist())) > 3


def test_train_command_writes_curves_and_summary(tmp_path):
    result = CliRunner().invoke(app, ["train", "--steps", "6", "--eval-every", "3", "--dim", "64", "--layers", "1",
                                      "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["final_val_loss"]) == {"nvfp4", "bf16"}
    assert summary["arms"][0]["report_quantized"] > 0 and summary["arms"][1]["report_quantized"] == 0
    assert len(summary["arms"][0]["loss"]) == 6 and len(summary["arms"][0]["val"]) == 2
    assert (tmp_path / "loss_curves.png").stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["train", "--dim", "48"])
    assert bad.exit_code == 2 and "--dim" in bad.stderr
    no_gpu = CliRunner().invoke(app, ["train", "--device", "cpu", "--cuda-graphs", "--out", str(tmp_path)])
    assert no_gpu.exit_code == 2 and "cuda_graphs" in no_gpu.stderr


def test_train_config_passes_the_recipe_switches_and_extra_bf16_linears_to_compile():
    from nvfp4_compiler.config import Config
    from nvfp4_compiler.trainer import RECIPE_BF16_MODULES, TrainConfig

    options = TrainConfig(keep_bf16=" *ffn.down, *cross_attn.* ,", rht_wgrad=False, stochastic_gradients=False,
                          weight_tiles_2d=False, keep_last_blocks=1).compile_options()
    assert options["exclude"] == RECIPE_BF16_MODULES + ("*ffn.down", "*cross_attn.*")
    config = Config(**options)  # every option is a Config field
    assert (config.rht_wgrad, config.stochastic_gradients, config.weight_tiles_2d) == (False, False, False)
    assert config.exclusion_reason("blocks.0.ffn.down", 2) and not config.exclusion_reason("blocks.0.ffn.up", 2)
    assert TrainConfig().compile_options()["exclude"] == RECIPE_BF16_MODULES
