"""Which linears of a trained video DiT cost the most validation loss in NVFP4? (leave-one-out)

Reads a training run's directory (``examples/train_video.py --out DIR`` writes the trained
weights as ``arm_<recipe>.pt`` beside ``arm_<recipe>.json``), measures every NVFP4 linear's
sensitivity on the run's validation set (``nvfp4_compiler.sensitivity``), and reports the linears
a FLOP budget would keep in bf16 with the validation loss that choice gives. Prints a table,
writes JSON and a bar plot.

    python examples/train_video.py --arms bf16 --steps 300 --out runs/train
    python benchmarks/layer_sensitivity.py runs/train --json sensitivity.json --plot sensitivity.png
    python benchmarks/layer_sensitivity.py runs/h100 --arm nvfp4 --device cuda --budget 0.15
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import write_json  # noqa: E402

from nvfp4_compiler.config import Config  # noqa: E402
from nvfp4_compiler.models import build_model  # noqa: E402
from nvfp4_compiler.sensitivity import fake_quantized, layer_sensitivity, quantizable_linears  # noqa: E402
from nvfp4_compiler.trainer import TrainConfig, validation_loss, validation_set  # noqa: E402


def load_arm(run_dir: str, arm: str, device: str):
    """(TrainConfig, model with the arm's trained weights) from a training run's directory."""
    summary_path, weights_path = (os.path.join(run_dir, f"arm_{arm}.{ext}") for ext in ("json", "pt"))
    for path in (summary_path, weights_path):
        if not os.path.exists(path):
            raise SystemExit(f"run_dir: {path} not found (train with examples/train_video.py --out {run_dir})")
    with open(summary_path) as f:
        saved = json.load(f)["config"]
    cfg = TrainConfig(**dict(saved, device=device, cuda_graphs=False))
    model = build_model(cfg.model_config(), seed=cfg.seed, device=torch.device(device)).eval()
    model.load_state_dict(torch.load(weights_path, map_location=device))
    return cfg, model


def plot(sens, chosen: list[str], path: str, top: int = 20) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sens.ranked()[:top][::-1]
    increase = sens.all_quantized - sens.full_precision
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(names) + 1.5))
    colors = ["C3" if n in chosen else "C0" for n in names]
    ax.barh(names, [sens.gain(n) / increase for n in names], color=colors)
    for i, name in enumerate(names):
        ax.annotate(f"{sens.flops[name]:.1%} of FLOPs", (0, i), xytext=(3, -3), textcoords="offset points", fontsize=7,
                    color="white" if sens.gain(name) / increase > 0.15 else "black")
    ax.set(xlabel="share of the NVFP4 forward's loss increase given back when kept alone in bf16",
           title=f"NVFP4 sensitivity (red: kept in bf16 by the budget); loss {sens.full_precision:.4g} -> "
                 f"{sens.all_quantized:.4g}")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a training run's --out directory")
    parser.add_argument("--arm", default="bf16", choices=("bf16", "nvfp4"), help="whose trained weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=0.15, help="FLOP share of the NVFP4 linears kept in bf16")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()

    cfg, model = load_arm(args.run_dir, args.arm, args.device)
    class_text, val = validation_set(cfg)
    options = cfg.compile_options()
    candidates = quantizable_linears(model, Config(**{k: options[k] for k in (
        "exclude", "keep_first_blocks_bf16", "keep_last_blocks_bf16")}))
    sens = layer_sensitivity(model, lambda m: validation_loss(m, class_text, val), candidates)
    chosen = sens.choose(args.budget)
    with fake_quantized(model, [n for n in candidates if n not in chosen]):
        with_chosen = validation_loss(model, class_text, val)

    from rich.console import Console

    console = Console()
    console.print(sens.table(args.top))
    spent = sum(sens.flops[n] for n in chosen)
    console.print(f"budget {args.budget:.0%} of the NVFP4 FLOPs keeps {len(chosen)} linears in bf16 ({spent:.1%}): "
                  f"{', '.join(chosen) or '-'}")
    console.print(f"validation loss: full precision {sens.full_precision:.5g}, all NVFP4 {sens.all_quantized:.5g} "
                  f"(x{sens.all_quantized / sens.full_precision:.4f}), chosen kept in bf16 {with_chosen:.5g} "
                  f"(x{with_chosen / sens.full_precision:.4f})")
    if args.json:
        write_json(args.json, {"run_dir": args.run_dir, "arm": args.arm, "config": vars(cfg), "budget": args.budget,
                               "chosen": chosen, "chosen_flops_share": spent, "val_with_chosen_kept": with_chosen,
                               **sens.to_dict()})
    if args.plot:
        plot(sens, chosen, args.plot)


if __name__ == "__main__":
    main()
