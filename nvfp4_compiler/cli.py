"""The ``nvfp4`` command line."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="NVFP4 toolkit for video transformers.", no_args_is_help=True, add_completion=False)
console = Console()


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
    chunks: int = typer.Option(3, min=1, help="Video chunks to generate, one after another."),
    steps: int = typer.Option(4, min=1, help="Denoising steps per chunk."),
    seed: int = typer.Option(0, help="Seed of the weights and the noise."),
    device: str = typer.Option("auto", help="'auto' (CUDA if available), 'cpu' or 'cuda'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Compile the embedded video DiT to NVFP4, generate video chunks, and compare with bf16."""
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
    console.print(f"time: bf16 {result.seconds_bf16:.2f} s, NVFP4 {result.seconds_nvfp4:.2f} s "
                  "(NVFP4 includes graph capture; the reference backend dequantizes in PyTorch)")


BENCHMARKS = ("quantize", "gemm", "block")


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
