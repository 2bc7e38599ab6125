"""Ablations of NVIDIA's NVFP4 training recipe on the embedded video DiT: which switch, or which
linears, cost validation loss?

Each variant trains the NVFP4 arm with one change against the full recipe (a switch off, or more
linears kept in bf16); the bf16 arm trains once per seed. All arms of a seed share weights,
batches, noise and timesteps (``trainer.train_arm``). Reported per variant and seed: final
validation loss over the bf16 arm's with the arm's own forward (NVFP4 inference graphs) and with
a full-precision forward of the same weights. Prints a table, writes JSON and a plot.

    python benchmarks/ablate_training_recipe.py --steps 300 --seeds 0 1 --json ablation.json
    python benchmarks/ablate_training_recipe.py --variants recipe no_sr --seeds 0 --json part.json  # a subset
    python benchmarks/ablate_training_recipe.py --device cuda --cuda-graphs --dim 512 --layers 8 --heads 4 \
        --lr 1e-3 --batch-size 16 --steps 2000 --json gpu.json                                  # on a GPU
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, write_json  # noqa: E402

from nvfp4_compiler.trainer import TrainConfig, add_config_arguments, train_arm  # noqa: E402

#: variant -> TrainConfig fields changed from the full recipe
VARIANTS = {
    "recipe": {},
    "no_sr": {"stochastic_gradients": False},
    "no_rht": {"rht_wgrad": False},
    "weights_1x16": {"weight_tiles_2d": False},
    "four_over_six": {"four_over_six": True},
    "bf16_cross_attn": {"keep_bf16": "*cross_attn.*"},
    "bf16_self_qkv": {"keep_bf16": "*self_attn.to_q,*self_attn.to_k,*self_attn.to_v"},
    "bf16_self_out": {"keep_bf16": "*self_attn.to_out"},
    "bf16_ffn_down": {"keep_bf16": "*ffn.down"},
}


def run(variants: list[str], seeds: list[int], base: TrainConfig, on_row=None) -> list[dict]:
    """Train the bf16 arm and each variant's NVFP4 arm per seed; ``on_row(rows)`` after each arm."""
    rows = []
    for seed in seeds:
        cfg = replace(base, seed=seed, eval_every=base.steps)
        torch._dynamo.reset()  # Dynamo's cache holds every compiled model (and its weights) until reset
        bf16 = train_arm("bf16", cfg)
        bf16_val = bf16["val"][-1][1]
        rows.append({"variant": "bf16", "seed": seed, "val": bf16_val, "val_full_precision": bf16_val})
        if on_row:
            on_row(rows)
        for name in variants:
            torch._dynamo.reset()
            arm = train_arm("nvfp4", replace(cfg, **VARIANTS[name]))
            rows.append({"variant": name, "seed": seed, "val": arm["val"][-1][1],
                         "val_full_precision": arm["val_full_precision"][-1][1],
                         "ratio_own_forward": arm["val"][-1][1] / bf16_val,
                         "ratio_full_precision": arm["val_full_precision"][-1][1] / bf16_val,
                         "quantized_linears": arm["report_quantized"]})
            print(rows[-1], flush=True)
            if on_row:
                on_row(rows)
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {r["variant"] for r in rows}
    names = [v for v in VARIANTS if v in present]  # the full recipe first, then the table's order
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, name in enumerate(names):
        own = [r["ratio_own_forward"] for r in rows if r["variant"] == name]
        full = [r["ratio_full_precision"] for r in rows if r["variant"] == name]
        ax.scatter([i - 0.1] * len(own), own, color="C0", label="own (NVFP4) forward" if i == 0 else None)
        ax.scatter([i + 0.1] * len(full), full, color="C1", label="full-precision forward" if i == 0 else None)
    ax.axhline(1.02, color="grey", linestyle="--", label="target: within 2% of bf16")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set(ylabel="final val loss / bf16 arm's", title="NVFP4 recipe ablations (one point per seed)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    # every TrainConfig field but those a variant or the sweep sets (--steps defaults to 300)
    add_config_arguments(parser, skip=("seed", "eval_every", "arms", *{f for v in VARIANTS.values() for f in v}))
    parser.add_argument("--json")
    parser.add_argument("--plot", help="PNG of the ratios")
    args = parser.parse_args()
    options = vars(args)
    variants, seeds, json_path, plot_path = (options.pop(k) for k in ("variants", "seeds", "json", "plot"))
    base = TrainConfig(**options)
    # the JSON is rewritten after every arm, so a run cut off by a time limit keeps what it finished
    rows = run(variants, seeds, base,
               on_row=lambda rows: write_json(json_path, {"config": vars(base), "steps": base.steps, "rows": rows}))
    table = [[r["variant"], r["seed"], r["val"], r["val_full_precision"], r.get("ratio_own_forward", 1.0),
              r.get("ratio_full_precision", 1.0)] for r in rows]
    print_table(f"NVFP4 recipe ablations, {base.steps} steps, final validation loss",
                ["variant", "seed", "own forward", "full-precision forward", "x bf16 (own)", "x bf16 (full)"], table)
    if plot_path:
        plot(rows, plot_path)
