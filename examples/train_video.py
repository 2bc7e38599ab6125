"""Train the embedded video DiT on procedural bouncing-shape videos, NVFP4 vs bf16, same seed.

    python examples/train_video.py --steps 300 --out runs/train      # CPU: a few minutes
    python examples/train_video.py --steps 3000 --device cuda --dim 256 --layers 4 --out runs/h100

Writes runs/.../loss_curves.png and summary.json (final validation losses, their ratio, step times).
Same as `nvfp4 train`.
"""

import argparse

from nvfp4_compiler.trainer import TrainConfig, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    for field, value in vars(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--out", default="runs/train")
    args = vars(parser.parse_args())
    out = args.pop("out")
    summary = run(TrainConfig(**args), out)
    print(f"final validation loss: NVFP4 {summary['final_val_loss']['nvfp4']:.4f}, "
          f"bf16 {summary['final_val_loss']['bf16']:.4f} (ratio {summary['val_loss_ratio_nvfp4_over_bf16']:.3f}); "
          f"step time ratio {summary['step_time_ratio_nvfp4_over_bf16']:.2f}; wrote {out}")
