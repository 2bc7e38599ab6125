"""Procedural video data and the two-arm trainer (`nvfp4 train`), at a size that runs in seconds."""

import json

import pytest
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
    result = CliRunner().invoke(app, ["train", "--steps", "6", "--eval-every", "3", "--dim", "64", "--layers", "2",
                                      "--batch-size", "2", "--device", "cpu", "--keep-first-blocks", "1",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["final_val_loss"]) == {"nvfp4", "bf16"}
    # block 0 kept in bf16: block 1's ten linears in NVFP4, none in the bf16 arm
    assert summary["arms"][0]["report_quantized"] == 10 and summary["arms"][1]["report_quantized"] == 0
    assert summary["config"]["keep_first_blocks"] == 1 and "(step 6)" in result.output
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
                          weight_tiles_2d=False, keep_first_blocks=1, keep_last_blocks=1).compile_options()
    assert options["exclude"] == RECIPE_BF16_MODULES + ("*ffn.down", "*cross_attn.*")
    config = Config(**options)  # every option is a Config field
    assert (config.rht_wgrad, config.stochastic_gradients, config.weight_tiles_2d) == (False, False, False)
    assert config.exclusion_reason("blocks.1.ffn.down", 3) and not config.exclusion_reason("blocks.1.ffn.up", 3)
    assert "first 1" in config.exclusion_reason("blocks.0.ffn.up", 3)
    assert "last 1" in config.exclusion_reason("blocks.2.ffn.up", 3)
    assert TrainConfig().compile_options()["exclude"] == RECIPE_BF16_MODULES


def _arm(recipe, val_steps, scale):
    return {"recipe": recipe, "steps_done": val_steps[-1], "loss": [1.0] * val_steps[-1],
            "val": [(s, scale / s) for s in val_steps], "val_full_precision": [(s, scale / s) for s in val_steps],
            "step_seconds_median": 0.1, "report_quantized": 0}


def test_summary_compares_the_arms_at_the_last_step_both_evaluated(tmp_path):
    """An arm cut off by a time limit (NVFP4 at step 200 of 300) is compared with the other arm's
    loss at step 200, not at its own last step."""
    from nvfp4_compiler.trainer import TrainConfig, summarize

    arms = [_arm("nvfp4", [100, 200], 2.2), _arm("bf16", [100, 200, 300], 2.0)]
    summary = summarize(TrainConfig(), arms, str(tmp_path))
    assert summary["compared_at_step"] == 200
    assert abs(summary["val_loss_ratio_nvfp4_over_bf16"] - 1.1) < 1e-12
    assert abs(summary["val_loss_ratio_full_precision"] - 1.1) < 1e-12
    with pytest.raises(ValueError, match="eval-every"):
        summarize(TrainConfig(), [_arm("nvfp4", [150], 2.2), _arm("bf16", [100, 200], 2.0)], str(tmp_path))


def test_trained_weights_are_saved_and_reload(tmp_path):
    from nvfp4_compiler.models import build_model
    from nvfp4_compiler.trainer import TrainConfig, run, validation_loss, validation_set

    cfg = TrainConfig(steps=2, eval_every=2, dim=32, layers=1, batch_size=2, eval_clips=2, arms="bf16")
    summary = run(cfg, str(tmp_path), progress=False)
    model = build_model(cfg.model_config(), seed=cfg.seed)
    model.load_state_dict(torch.load(tmp_path / "arm_bf16.pt"))
    class_text, val = validation_set(cfg)
    assert validation_loss(model.train(), class_text, val) == summary["arms"][0]["val"][-1][1]
