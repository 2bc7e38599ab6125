"""`nvfp4 rewrite` and `nvfp4 inspect`: MODEL kinds, outputs, and one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import torch
from typer.testing import CliRunner

from nvfp4_compiler import checkpoint
from nvfp4_compiler.cli import app

runner = CliRunner()
TESTS = os.path.dirname(__file__)


def _invoke(*args):
    return runner.invoke(app, list(args))


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("nvfp4: error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_rewrite_builtin_and_load_back(tmp_path):
    out = tmp_path / "ckpt"
    result = _invoke("rewrite", "tiny", "--out", str(out), "--exclude", "proj_out")
    assert result.exit_code == 0, result.output
    assert "26 linears in NVFP4, 1 kept (proj_out)" in result.stdout
    assert json.loads((out / "nvfp4_source.json").read_text()) == {"model": "tiny", "seed": 0}
    assert "blocks.0.ffn.up.weight_scale_2" in checkpoint.read_tensors(str(out))


def test_rewrite_factory_reports_ineligible_layers(tmp_path):
    result = _invoke("rewrite", "model_factories:small_mlp", "--out", str(tmp_path / "mlp"))
    assert result.exit_code == 0, result.output
    assert "2 linears in NVFP4, 1 kept (3)" in result.stdout  # layer 3 has K = 20


def test_rewrite_diffusers_folder(tmp_path):
    import diffusers  # a test dependency (setup.sh installs .[test])
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1, rope_max_seq_len=32)
    model.save_pretrained(str(tmp_path / "wan"))
    result = _invoke("rewrite", str(tmp_path / "wan"), "--out", str(tmp_path / "ckpt"))
    assert result.exit_code == 0, result.output
    assert "16 linears in NVFP4" in result.stdout
    inspect = _invoke("inspect", str(tmp_path / "wan"), "--json")
    assert inspect.exit_code == 0, inspect.output
    assert json.loads(inspect.stdout)["summary"]["quantized"] == 16


def test_inspect_json_and_html(tmp_path):
    result = _invoke("inspect", "tiny", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["quantized"] == 27
    page = tmp_path / "tiny.html"
    result = _invoke("inspect", "tiny", "--html", str(page))
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "<svg" in text and "GEMM blocks.0.ffn.up [bias, gelu_tanh" in text
    assert "<script" not in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    _one_line_error(_invoke("inspect", "tiny", "--html", str(page)), "already exists")
    assert _invoke("inspect", "tiny", "--html", str(page), "--force").exit_code == 0


def test_error_paths_are_one_line(tmp_path):
    _one_line_error(_invoke("rewrite", "no-such-model", "--out", str(tmp_path / "x")), "MODEL", "built-in name")
    _one_line_error(_invoke("rewrite", "model_factories:broken", "--out", str(tmp_path / "x")), "weights not found")
    _one_line_error(_invoke("rewrite", "model_factories:not_a_module", "--out", str(tmp_path / "x")), "expected an nn.Module")
    _one_line_error(_invoke("rewrite", "no_such_package:f", "--out", str(tmp_path / "x")), "cannot import")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    _one_line_error(_invoke("rewrite", str(tmp_path / "bad"), "--out", str(tmp_path / "x")), "not valid JSON")
    _one_line_error(_invoke("rewrite", "tiny", "--out", str(tmp_path / "missing" / "x")), "does not exist")
    (tmp_path / "exists").mkdir()
    _one_line_error(_invoke("rewrite", "tiny", "--out", str(tmp_path / "exists")), "already exists", "--force")


def test_debug_shows_the_traceback(tmp_path):
    result = _invoke("--debug", "rewrite", "no-such-model", "--out", str(tmp_path / "x"))
    assert result.exit_code != 0 and result.exception is not None
    assert "built-in name" in str(result.exception)


def test_interrupt_during_rewrite_exits_130_and_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", interrupt)
    result = _invoke("rewrite", "tiny", "--out", str(tmp_path / "ckpt"))
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert os.listdir(tmp_path) == []


def test_installed_script_errors_in_one_line_without_traceback(tmp_path):
    script = shutil.which("nvfp4", path=os.path.dirname(sys.executable))
    assert script is not None, "the nvfp4 console script is not installed next to this Python (run ./setup.sh)"
    env = {**os.environ, "PYTHONPATH": TESTS}
    proc = subprocess.run([script, "rewrite", "model_factories:small_mlp", "--out", str(tmp_path / "ok")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([script, "rewrite", "model_factories:small_mlp", "--out", str(tmp_path / "ok")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "already exists" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rewrite_with_calibration_writes_input_scales(tmp_path):
    import nvfp4_compiler as nvfp4
    from nvfp4_compiler.api import input_amax_by_module
    from nvfp4_compiler.models import build_model, example_inputs

    out = tmp_path / "calibrated"
    result = _invoke("rewrite", "tiny", "--out", str(out), "--calibrate", "2")
    assert result.exit_code == 0, result.output
    tensors = checkpoint.read_tensors(str(out))
    scales = {k.removesuffix(".input_scale"): v for k, v in tensors.items() if k.endswith(".input_scale")}
    assert len(scales) == 27 and all(v.dtype == torch.float32 and v.dim() == 0 for v in scales.values())
    # the same calibration by hand: input_scale is the format's decode scale for that amax, bit for bit
    model = build_model("tiny").eval()
    compiled = nvfp4.compile(model, activation_scales="static")
    nvfp4.calibrate(compiled, [example_inputs(model.cfg, seed=i) for i in range(2)], progress=False)
    amax = input_amax_by_module(compiled)
    for name in ("blocks.0.ffn.down", "blocks.0.self_attn.to_q"):
        want = nvfp4.quantize(torch.ones(16), amax=amax[name]).global_scale
        assert torch.equal(scales[name], want), name
