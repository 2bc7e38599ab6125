"""Train the embedded video DiT on procedural bouncing-shape videos, NVFP4 vs bf16, same seed.

    python examples/train_video.py --steps 300 --out runs/train      # CPU: a few minutes
    python examples/train_video.py --steps 3000 --device cuda --dim 256 --layers 4 --out runs/h100
    (add --cuda-graphs on a GPU to replay each step as CUDA graphs: much less host time per step)

Writes runs/.../loss_curves.png and summary.json (final validation losses, their ratio, step times)
and each arm's trained weights (arm_<recipe>.pt; benchmarks/layer_sensitivity.py reads them).
Same as `nvfp4 train`. To train the arms in two processes sharing one GPU:

    python examples/train_video.py --arms nvfp4 --out runs/h100 & \
    python examples/train_video.py --arms bf16 --out runs/h100; wait
    python examples/train_video.py --combine --out runs/h100     # plot + summary.json
"""

import argparse

from nvfp4_compiler.trainer import TrainConfig, add_config_arguments, run, summarize_dir, summary_line

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", default="runs/train")
    parser.add_argument("--combine", action="store_true", help="only combine arm_*.json in --out")
    args = vars(parser.parse_args())
    out, combine = args.pop("out"), args.pop("combine")
    summary = summarize_dir(out) if combine else run(TrainConfig(**args), out)
    if "final_val_loss" not in summary:
        arm = summary["arms"][0]
        raise SystemExit(f"{arm['recipe']}: final validation loss {arm['val'][-1][1]:.4f}; wrote {out}")
    print(summary_line(summary, out))
