"""Plot the H100 block-forward and training-step runs: bf16 against NVFP4, side by side.

    python benchmarks/plot_block_training.py [--out docs/h100_block_and_training.png]

Reads the JSON the benchmarks wrote (benchmarks/runs/): bench_block.py for Wan-1.3B and Wan-5B,
bench_training.py for Wan-1.3B. Three panels: block forward time per variant, training step time,
activation bytes kept for backward. Each NVFP4 bar is labelled with its speed against bf16 (times) or its size ratio (memory).
"""

from __future__ import annotations

import argparse
import json
import os

RUNS = os.path.join(os.path.dirname(__file__), "runs")
BLOCK_RUNS = {"Wan-1.3B": "block_h100_s9_final.json", "Wan-5B": "block5_h100_s9_tma.json"}
TRAINING_RUN = "training_block_h100_s9_tma.json"
# (label, bf16 key, NVFP4 key): each pair is measured the same way, in the same run
BLOCK_PAIRS = [("compiled", "compiled_bf16", "nvfp4"), ("+ CUDA graphs", "compiled_bf16_graphs", "nvfp4_graphs")]


def _result(name: str) -> dict:
    with open(os.path.join(RUNS, name)) as f:
        return json.load(f)["results"][0]


def _bars(ax, labels, bf16, nvfp4, unit: str, title: str, speed: bool) -> None:
    """Paired bars; each NVFP4 bar labelled with its speed vs bf16 (``speed``) or its size ratio."""
    xs = range(len(labels))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], bf16, width, label="bf16", color="#7f7f7f")
    bars = ax.bar([x + width / 2 for x in xs], nvfp4, width, label="NVFP4", color="#76b900")
    for bar, base, value in zip(bars, bf16, nvfp4):
        text = f"{base / value:.2f}x speed" if speed else f"{value / base:.2f}x"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot(out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (block_ax, step_ax, memory_ax) = plt.subplots(1, 3, figsize=(14, 4))
    labels, bf16, nvfp4 = [], [], []
    for model, run in BLOCK_RUNS.items():
        ms = _result(run)["ms"]
        for label, base, ours in BLOCK_PAIRS:
            labels.append(f"{model}\n{label}")
            bf16.append(ms[base])
            nvfp4.append(ms[ours])
    _bars(block_ax, labels, bf16, nvfp4, "ms", "Block forward at a full chunk (lower is better)", speed=True)

    training = _result(TRAINING_RUN)
    steps = training["step_ms"]
    _bars(step_ax, ["compiled", "+ CUDA graphs"], [steps["compiled_bf16"], steps["compiled_bf16_graphs"]],
          [steps["nvfp4"], steps["nvfp4_graphs"]], "ms", "Wan-1.3B block training step", speed=True)
    saved = training["saved_activation_bytes"]
    _bars(memory_ax, ["kept for backward"], [saved["compiled_bf16"] / 2**20], [saved["nvfp4"] / 2**20], "MiB",
          "Activations kept for backward (target <= 0.6x)", speed=False)
    fig.suptitle("NVIDIA H100: torch.compile bf16 vs nvfp4.compile (Triton backend + Inductor), same runs", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(RUNS), "..", "docs", "h100_block_and_training.png"))
    plot(parser.parse_args().out)
