"""Validation-loss ratios (NVFP4 arm / bf16 arm) of several training runs side by side.

Each RUN is a directory that ``examples/train_video.py --combine`` summarized (``summary.json``),
named ``<variant>_s<seed>`` (``device_keep_first_block.sh`` names them so). Prints per run the
ratio at the last step both arms evaluated and the mean of the last three evaluations, with the
arm's own NVFP4 forward and with a full-precision forward of its weights; per variant the mean
over seeds. Writes a compact JSON (the ratio curves, no per-step losses) and a plot.

    python benchmarks/compare_train_runs.py runs/recipe_s0 runs/first_block_s0 ... --json cmp.json --plot cmp.png
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, write_json  # noqa: E402

from nvfp4_compiler.trainer import val_ratios  # noqa: E402


def load_run(path: str) -> dict:
    with open(os.path.join(path, "summary.json")) as f:
        summary = json.load(f)
    match = re.fullmatch(r"(.+)_s(\d+)", os.path.basename(os.path.normpath(path)))
    if not match:
        raise SystemExit(f"RUN: expected a directory named <variant>_s<seed>, got {path}")
    own, full = val_ratios(summary["arms"], "val"), val_ratios(summary["arms"], "val_full_precision")
    last = max(own)
    tail = sorted(own)[-3:]
    return {"run": path, "variant": match[1], "seed": int(match[2]), "step": last,
            "steps_done": [arm["steps_done"] for arm in summary["arms"]],
            "quantized_linears": summary["arms"][0]["report_quantized"],
            "own": own[last], "full_precision": full[last], "own_last3": statistics.mean(own[s] for s in tail),
            "own_curve": own, "full_precision_curve": full}


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, variant in enumerate(variants):
        for n, r in enumerate(r for r in rows if r["variant"] == variant):
            steps = sorted(r["own_curve"])
            ax1.plot(steps, [r["own_curve"][s] for s in steps], color=f"C{i}", alpha=0.7,
                     label=variant if n == 0 else None)   # one legend entry per variant
        own = [r["own"] for r in rows if r["variant"] == variant]
        ax2.scatter([i] * len(own), own, color=f"C{i}")
        ax2.scatter([i], [statistics.mean(own)], color="black", marker="_", s=400)
    for ax in (ax1, ax2):
        ax.axhline(1.02, color="grey", linestyle="--", label="target: within 2% of bf16")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.grid(alpha=0.3)
    ax1.set(title="validation loss, NVFP4 arm (own forward) / bf16 arm", xlabel="step", ylim=(0.9, 1.2))
    ax1.legend()
    ax2.set_xticks(range(len(variants)), variants)
    ax2.set(title="at the last common evaluation (one point per seed; bar: mean)", ylabel="ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    rows = sorted((load_run(p) for p in args.runs), key=lambda r: (r["variant"], r["seed"]))
    print_table("NVFP4 / bf16 validation loss per run",
                ["variant", "seed", "step", "linears in NVFP4", "own forward", "full-precision forward",
                 "own, mean of last 3 evals"],
                [[r["variant"], r["seed"], r["step"], r["quantized_linears"], r["own"], r["full_precision"],
                  r["own_last3"]] for r in rows])
    means = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        own = [r["own"] for r in rows if r["variant"] == variant]
        means[variant] = {"seeds": len(own), "own_mean": statistics.mean(own), "own_min": min(own), "own_max": max(own),
                          "within_2_percent": sum(v <= 1.02 for v in own)}
        print(f"{variant}: mean {means[variant]['own_mean']:.4f} over {len(own)} seeds "
              f"(range {min(own):.4f}-{max(own):.4f}; within 2%: {means[variant]['within_2_percent']} of {len(own)})")
    write_json(args.json, {"runs": rows, "per_variant": means})
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
