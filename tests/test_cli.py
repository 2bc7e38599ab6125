"""The nvfp4 command line, through typer's runner and through the installed console script."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nvfp4_compiler.cli import app

runner = CliRunner()


def test_roundtrip_json_reports_sqnr_and_bytes():
    result = runner.invoke(app, ["roundtrip", "--rows", "32", "--cols", "64", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 8
    for row in rows:
        assert 10 < row["sqnr_db"] < 30
        assert row["bf16_bytes"] / row["nvfp4_bytes"] > 3


def test_demo_generates_chunks_close_to_bf16():
    # four chunks: the fourth does not fit the sink + window + new chunk, so the cache rolls
    result = runner.invoke(app, ["demo", "--chunks", "4", "--steps", "1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [c["chunk"] for c in out["chunks"]] == [0, 1, 2, 3]
    assert all(c["finite"] and 0 < c["relative_error"] < 0.3 for c in out["chunks"])
    assert out["report"]["summary"]["quantized"] == 27
    # the whole envelope: both blocks' self-attention K/V went into NVFP4 pages, 3.5x smaller than
    # the same tokens in bf16 (data, E4M3 and per-page FP32 scales), and rolled: the pages hold the
    # sink, the window and the last chunk (3 of the 4 chunks)
    assert out["report"]["summary"]["attention_kv_converted"] == 2
    assert out["report"]["summary"]["attention_calls"] == 4  # each call once, however often recompiled
    kv = out["kv_cache"]
    assert (kv["tokens_per_layer"], kv["layers"]) == (3 * 32, 2)
    assert kv["bf16_bytes"] == 2 * 2 * 96 * 64 * 2  # K and V x 2 layers x 96 tokens x dim 64 x 2 bytes
    assert 3.5 <= kv["bf16_bytes"] / kv["nvfp4_bytes"] < 3.56


def test_demo_rejects_bad_device():
    result = runner.invoke(app, ["demo", "--device", "tpu"])
    assert result.exit_code != 0
    assert "--device" in result.output


def test_installed_console_script_runs():
    script = shutil.which("nvfp4", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.fail("the nvfp4 console script is not installed next to this Python (run ./setup.sh)")
    proc = subprocess.run([script, "roundtrip", "--rows", "16", "--cols", "32"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "NVFP4 round trip" in proc.stdout and "gaussian" in proc.stdout


def test_bench_rejects_unknown_names_and_needs_a_gpu():
    result = runner.invoke(app, ["bench", "everything"])
    assert result.exit_code != 0 and "WHICH" in result.output
    import torch

    if not torch.cuda.is_available():
        result = runner.invoke(app, ["bench", "gemm"])
        assert result.exit_code == 1 and "needs a CUDA GPU" in result.output
