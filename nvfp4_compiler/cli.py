"""The ``nvfp4`` command line."""

from __future__ import annotations

import contextlib
import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="NVFP4 toolkit for video transformers.", no_args_is_help=True, add_completion=False)
console = Console()
errors = Console(stderr=True)
STATE = {"debug": False}
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """NVFP4 toolkit for video transformers."""
    STATE["debug"] = debug


@contextlib.contextmanager
def user_errors():
    """Expected failures (bad input, missing files, unwritable folders) become one line on stderr and
    a non-zero exit; a traceback only with --debug."""
    from .checkpoint import CheckpointError
    from .capture import CaptureError
    from .models.resolve import ModelSpecError

    try:
        yield
    except KeyboardInterrupt:
        if STATE["debug"]:
            raise
        errors.print("nvfp4: interrupted; no partial output was left behind", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (ModelSpecError, CheckpointError, CaptureError, OSError, ValueError) as err:
        if STATE["debug"]:
            raise
        errors.print(f"nvfp4: error: {err}".splitlines()[0], markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def rewrite(
    model: str = typer.Argument(..., help="Built-in name (tiny, wan-1.3b, wan-5b), package.module:factory, or a model folder."),
    out: str = typer.Option(..., "--out", help="Checkpoint folder to write (must not exist unless --force)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    exclude: list[str] = typer.Option([], "--exclude", help="Module-name glob to keep in bf16 (repeatable)."),
    keep_last_blocks: int = typer.Option(0, "--keep-last-blocks", min=0, help="Keep the last N blocks in bf16."),
    shard_size_mb: int = typer.Option(5120, "--shard-size-mb", min=1, help="Largest shard, in MiB."),
    calibrate: int = typer.Option(0, "--calibrate", min=0,
                                  help="Run N example batches with static scales and write each linear's input_scale."),
    seed: int = typer.Option(0, help="Seed of a built-in model's random weights."),
) -> None:
    """Quantize a model's linears and write an NVFP4 checkpoint (Model Optimizer layout, safetensors)."""
    from rich.progress import Progress

    from . import checkpoint
    from .config import Config
    from .models.resolve import resolve

    with user_errors():
        resolved = resolve(model, seed=seed, with_inputs=calibrate > 0)
        config = Config(exclude=tuple(exclude), keep_last_blocks_bf16=keep_last_blocks)
        input_amax = _calibrated_input_amax(resolved, config, calibrate) if calibrate else None
        with Progress(console=errors, transient=True) as bar:
            task = bar.add_task(f"quantizing {resolved.description}", total=None)
            plan = checkpoint.save(
                resolved.model, out, config, force=force, shard_bytes=shard_size_mb * 2**20, input_amax=input_amax,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                extra_files={"nvfp4_source.json": {"model": model, "seed": seed}},
            )
        print(f"wrote {out}: {len(plan.quantized)} linears in NVFP4, {len(plan.excluded)} kept "
              f"({', '.join(sorted(plan.excluded)) or 'none'})")


def _calibrated_input_amax(resolved, config, batches: int) -> dict[str, float]:
    """Activation amax per linear from ``batches`` example batches (static-scale calibration)."""
    import dataclasses

    from . import api

    if resolved.example_inputs is None:
        raise ValueError(f"--calibrate: no example inputs are known for {resolved.description}")
    compiled = api.compile(resolved.model, dataclasses.replace(config, activation_scales="static"))
    if hasattr(resolved.model, "cfg"):  # built-in models: fresh random batches
        from .models import example_inputs

        data = [example_inputs(resolved.model.cfg, seed=i) for i in range(batches)]
    else:
        data = [resolved.example_inputs] * batches
    api.calibrate(compiled, data)
    amax = api.input_amax_by_module(compiled)
    compiled.restore()
    return amax


@app.command()
def inspect(
    model: str = typer.Argument(..., help="Built-in name, package.module:factory, or a model folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    html_path: str = typer.Option(None, "--html", help="Also write a self-contained HTML page with the graph drawn."),
    force: bool = typer.Option(False, "--force", help="Replace --html if it exists."),
    seed: int = typer.Option(0, help="Seed of a built-in model's random weights."),
) -> None:
    """Compile MODEL on example inputs and show its fused-graph report."""
    import os

    import torch

    from . import api
    from .models.resolve import resolve

    with user_errors():
        if html_path and os.path.exists(html_path) and not force:
            raise FileExistsError(f"--html: {html_path} already exists (pass --force to replace it)")
        resolved = resolve(model, seed=seed, with_inputs=True)
        if resolved.example_inputs is None:
            raise ValueError(f"MODEL: no example inputs are known for {resolved.description}; "
                             "give its module an example_inputs(model) function")
        compiled = api.compile(resolved.model)
        with torch.no_grad():
            compiled(*resolved.example_inputs, **(resolved.example_kwargs or {}))
        rep = api.report(compiled)
        if html_path:
            from .graph_html import render

            _write_atomically(html_path, render(compiled, f"nvfp4 inspect {model}"))
        if as_json:
            print(rep.to_json())
        else:
            console.print(rep)
            if html_path:
                print(f"wrote {html_path}")


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="Built-in name, package.module:factory, or a model folder."),
    onnx_path: str = typer.Option(..., "--onnx", help="ONNX file to write (opset 23)."),
    force: bool = typer.Option(False, "--force", help="Replace --onnx if it exists."),
    exclude: list[str] = typer.Option([], "--exclude", help="Module-name glob to keep in bf16 (repeatable)."),
    seed: int = typer.Option(0, help="Seed of a built-in model's random weights."),
) -> None:
    """Export MODEL to ONNX with FLOAT4E2M1 weights and NVFP4-quantized activations."""
    import os

    from . import onnx_export
    from .config import Config
    from .models.resolve import resolve

    with user_errors():
        if os.path.exists(onnx_path) and not force:
            raise FileExistsError(f"--onnx: {onnx_path} already exists (pass --force to replace it)")
        resolved = resolve(model, seed=seed, with_inputs=True)
        if resolved.example_inputs is None:
            raise ValueError(f"MODEL: no example inputs are known for {resolved.description}; "
                             "give its module an example_inputs(model) function")
        with console.status("exporting to ONNX", spinner="dots"):
            proto = onnx_export.to_onnx(resolved.model, resolved.example_inputs, Config(exclude=tuple(exclude)))
        onnx_export.save(proto, onnx_path, force=force)
        fp4 = sum(1 for i in proto.graph.initializer if i.data_type == 23)  # TensorProto.FLOAT4E2M1
        print(f"wrote {onnx_path}: opset {onnx_export.OPSET}, {fp4} FLOAT4E2M1 weights")


def _write_atomically(path: str, text: str) -> None:
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nvfp4-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@app.command()
def roundtrip(
    rows: int = typer.Option(256, min=1, help="Rows of each sample tensor."),
    cols: int = typer.Option(1024, min=1, help="Columns (the blocked dimension)."),
    seed: int = typer.Option(0, help="Random seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Quantize sample tensors to NVFP4 and back; print error (SQNR) and bytes saved."""
    from .roundtrip import roundtrip_table

    table_rows = roundtrip_table((rows, cols), seed)
    if as_json:
        print(json.dumps([r.to_dict() for r in table_rows], indent=2))
        return
    table = Table(title=f"NVFP4 round trip of bf16 [{rows}, {cols}] tensors")
    for col in ["distribution", "block", "SQNR (dB)", "max |error|", "bytes bf16 -> nvfp4", "ratio"]:
        table.add_column(col, justify="left" if col == "distribution" else "right")
    for r in table_rows:
        table.add_row(
            r.distribution, r.block, f"{r.sqnr_db:.2f}", f"{r.max_abs_error:.3g}",
            f"{r.bf16_bytes:,} -> {r.nvfp4_bytes:,}", f"{r.bf16_bytes / r.nvfp4_bytes:.2f}x",
        )
    console.print(table)


@app.command()
def demo(
    config: str = typer.Option("tiny", help="Embedded model config (tiny runs in seconds on a CPU)."),
    chunks: int = typer.Option(4, min=1, help="Video chunks to generate, one after another (from the fourth on, "
                                              "the cache rolls: sink + window)."),
    steps: int = typer.Option(4, min=1, help="Denoising steps per chunk."),
    seed: int = typer.Option(0, help="Seed of the weights and the noise."),
    device: str = typer.Option("auto", help="'auto' (CUDA if available), 'cpu' or 'cuda'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Compile the embedded video DiT to NVFP4 (GEMMs and KV cache), generate video chunks, and compare with bf16."""
    import torch

    from .demo import run_demo

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter(f"expected auto, cpu or cuda, got {device!r}", param_hint="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is available", param_hint="--device")
    result = run_demo(config, chunks, steps, seed, None if device == "auto" else torch.device(device),
                      progress=not as_json)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    console.print(result.report)
    table = Table(title=f"Generated chunks: NVFP4 vs bf16 ({config}, {steps} steps/chunk, {result.device})")
    for col in ["chunk", "frames", "relative error", "SQNR (dB)", "finite"]:
        table.add_column(col, justify="right")
    for row in result.chunks:
        table.add_row(str(row["chunk"]), row["frames"], f"{row['relative_error']:.4f}",
                      f"{row['sqnr_db']:.2f}", "yes" if row["finite"] else "[red]NO[/red]")
    console.print(table)
    kv = result.kv_cache
    console.print(f"KV cache after the last chunk (sink + window + last chunk: {kv['tokens_per_layer']} tokens x "
                  f"{kv['layers']} layers): {kv['bf16_bytes'] / 1024:.1f} KiB in bf16, NVFP4 pages "
                  f"{kv['nvfp4_bytes'] / 1024:.1f} KiB ({kv['bf16_bytes'] / kv['nvfp4_bytes']:.2f}x smaller), read in "
                  "place by the attention")
    console.print(f"time: bf16 {result.seconds_bf16:.2f} s, NVFP4 {result.seconds_nvfp4:.2f} s "
                  "(NVFP4 includes graph capture; the reference backend dequantizes in PyTorch)")


@app.command()
def train(
    steps: int = typer.Option(300, min=1, help="Optimizer steps per arm."),
    out: str = typer.Option("runs/train", "--out", help="Folder for loss_curves.png, summary.json and each arm's "
                                                         "trained weights (arm_<recipe>.pt)."),
    device: str = typer.Option("auto", help="'auto', 'cpu' or 'cuda'."),
    dim: int = typer.Option(128, min=16, help="Model width (multiple of 16 x heads)."),
    layers: int = typer.Option(2, min=1, help="Transformer blocks."),
    batch_size: int = typer.Option(8, min=1, help="Clips per step."),
    lr: float = typer.Option(2e-3, min=0.0, help="AdamW learning rate (cosine decay)."),
    seed: int = typer.Option(0, help="Seed of weights, data, noise and rounding (shared by both arms)."),
    eval_every: int = typer.Option(50, min=1, help="Steps between validation losses."),
    cuda_graphs: bool = typer.Option(False, help="Replay each step as CUDA graphs (needs a GPU)."),
    keep_first_blocks: int = typer.Option(0, min=0, help="Blocks kept in bf16 at the start (1: this DiT's most "
                                                          "NVFP4-sensitive linears, see benchmarks/RESULTS.md)."),
) -> None:
    """Train the embedded video DiT on procedural video, NVFP4 and bf16 arms from the same seed."""
    import torch

    from .trainer import TrainConfig, run, summary_line

    with user_errors():
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
            raise ValueError(f"--device: expected auto, cpu or an available cuda, got {device!r}")
        if dim % 32:
            raise ValueError(f"--dim: expected a multiple of 32 (2 heads x 16), got {dim}")
        cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, eval_every=eval_every,
                          dim=dim, layers=layers, device=device, cuda_graphs=cuda_graphs,
                          keep_first_blocks=keep_first_blocks)
        print(summary_line(run(cfg, out), out))


BENCHMARKS = ("quantize", "gemm", "static_operand", "block", "attention", "training")


@app.command()
def bench(
    which: list[str] = typer.Argument(None, help=f"Which benchmarks to run: {', '.join(BENCHMARKS)} (default: all)."),
    out_dir: str = typer.Option(".", "--out", help="Folder for the JSON results."),
) -> None:
    """Run the GPU benchmarks (benchmarks/bench_*.py): tables on stdout, JSON in --out."""
    import os
    import runpy
    import sys

    import torch

    which = which or list(BENCHMARKS)
    unknown = [w for w in which if w not in BENCHMARKS]
    if unknown:
        raise typer.BadParameter(f"expected some of {BENCHMARKS}, got {unknown}", param_hint="WHICH")
    if not torch.cuda.is_available():
        console.print("[red]nvfp4 bench needs a CUDA GPU (the benchmarks compare against cuBLAS).[/red]")
        raise typer.Exit(code=1)
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if not os.path.isdir(folder):
        console.print(f"[red]benchmark scripts not found at {folder}; run from a source checkout.[/red]")
        raise typer.Exit(code=1)
    for name in which:
        sys.argv = [f"bench_{name}.py", "--json", os.path.join(out_dir, f"{name}.json")]
        runpy.run_path(os.path.join(folder, f"bench_{name}.py"), run_name="__main__")


@app.command()
def version() -> None:
    """Print the versions of nvfp4_compiler, torch and triton."""
    import torch

    from . import __version__

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    print(f"nvfp4_compiler {__version__}, torch {torch.__version__}, triton {triton_version}")


if __name__ == "__main__":
    app()
