"""Train the embedded video DiT with flow matching on procedural video, NVFP4 vs bf16 arms.

Both arms start from the same weights and see the same batches, noise and timesteps. The model is
conditioned on the clip's class through a fixed random "text" embedding per class. Validation
loss is measured on held-out clips with fixed noise and timesteps, each arm running its own
forward (the NVFP4 arm in NVFP4).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from rich.progress import Progress

from .api import compile as nvfp4_compile
from .models import build_model, get_config
from .video_data import NUM_CLASSES, batch


#: NVIDIA's recipe keeps embeddings and the final projection in bf16: for the video DiT, the patch
#: embedding, the timestep/text embedding MLPs and the output projection.
RECIPE_BF16_MODULES = ("patch_embed", "time_embed.*", "time_proj", "text_embed.*", "proj_out")


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    eval_every: int = 50
    eval_clips: int = 32
    dim: int = 128
    layers: int = 2
    heads: int = 2
    frames: int = 4
    size: int = 16           # latent height = width
    keep_first_blocks: int = 0  # blocks kept in bf16 at the start (this DiT's most NVFP4-sensitive: RESULTS.md)
    keep_last_blocks: int = 0  # blocks kept in bf16 at the end (the recipe's ~15% of linears)
    keep_bf16: str = ""        # comma-separated globs of more linears kept in bf16 (e.g. "*.ffn.down")
    # the recipe's switches (Config's names; all on in NVIDIA's recipe), for ablations
    weight_tiles_2d: bool = True
    rht_wgrad: bool = True
    stochastic_gradients: bool = True
    four_over_six: bool = False  # Four Over Six block scales (not in NVIDIA's recipe; Config.four_over_six)
    device: str = "cpu"
    arms: str = "nvfp4,bf16"   # which arms to train; one per process lets two share a GPU
    cuda_graphs: bool = False  # replay each step as CUDA graphs (both arms; needs device "cuda")

    def __post_init__(self):
        if self.cuda_graphs and self.device != "cuda":
            raise ValueError(f"cuda_graphs: needs device 'cuda', got device {self.device!r}")

    def arm_list(self) -> list[str]:
        arms = [a.strip() for a in self.arms.split(",") if a.strip()]
        bad = [a for a in arms if a not in ("nvfp4", "bf16")]
        if bad or not arms:
            raise ValueError(f"arms: expected a comma-separated subset of 'nvfp4,bf16', got {self.arms!r}")
        return arms

    def compile_options(self) -> dict:
        """The ``nvfp4.compile`` options of the NVFP4 arm (the bf16 arm takes them too; with
        ``recipe="bf16"`` nothing is quantized, so they change nothing there)."""
        extra = tuple(g.strip() for g in self.keep_bf16.split(",") if g.strip())
        return dict(exclude=RECIPE_BF16_MODULES + extra, keep_first_blocks_bf16=self.keep_first_blocks,
                    keep_last_blocks_bf16=self.keep_last_blocks,
                    weight_tiles_2d=self.weight_tiles_2d, rht_wgrad=self.rht_wgrad,
                    stochastic_gradients=self.stochastic_gradients, four_over_six=self.four_over_six,
                    cuda_graphs=self.cuda_graphs)

    def clip_arguments(self) -> dict:
        """``video_data.batch``'s clip geometry for this model."""
        return dict(channels=self.model_config().in_channels, frames=self.frames, height=self.size, width=self.size)

    def model_config(self):
        return get_config("tiny", dim=self.dim, ffn_dim=4 * self.dim, num_heads=self.heads,
                          head_dim=self.dim // self.heads, num_layers=self.layers, latent_height=self.size,
                          latent_width=self.size, chunk_frames=self.frames, text_tokens=1)


def add_config_arguments(parser, skip: tuple[str, ...] = ()) -> None:
    """One ``--field`` option per TrainConfig field (booleans as ``--x/--no-x``), defaults from
    TrainConfig; ``skip`` leaves fields out. ``TrainConfig(**picked)`` rebuilds the config."""
    import argparse

    for field, value in vars(TrainConfig()).items():
        if field in skip:
            continue
        if isinstance(value, bool):
            parser.add_argument(f"--{field.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)


def _loss(model, videos, labels, class_text, noise, t):
    """Flow matching, Wan/LongLive convention: x_t = t * noise + (1 - t) * x, velocity = noise - x."""
    tt = t.view(-1, 1, 1, 1, 1)
    pred = model(tt * noise + (1 - tt) * videos, t * 1000, class_text[labels])
    return (pred.float() - (noise - videos)).square().mean()


def train_arm(recipe: str, cfg: TrainConfig, progress: Progress | None = None,
              checkpoint_path: str | None = None, weights_path: str | None = None) -> dict:
    """Train one arm; returns its loss curve, validation curve and step times.

    With ``checkpoint_path``, the curves so far are rewritten there at every evaluation, so a run
    cut off by a time limit still leaves its validation curve behind. With ``weights_path``, the
    trained weights (the model's ``state_dict``) are saved there at the end.
    """
    device = torch.device(cfg.device)
    mcfg = cfg.model_config()
    model = build_model(mcfg, seed=cfg.seed, device=device).train()
    compiled = nvfp4_compile(model, recipe=recipe, **cfg.compile_options())
    class_text, val = validation_set(cfg)
    clip_args = cfg.clip_arguments()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    data_gen = torch.Generator().manual_seed(cfg.seed + 1)
    torch.manual_seed(cfg.seed + 2)  # stochastic rounding draws
    losses, vals, vals_fp, times = [], [], [], []
    task = progress.add_task(f"training {recipe}", total=cfg.steps) if progress else None
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, 10**6, (cfg.batch_size,), generator=data_gen).tolist()
        x, y = (t.to(device) for t in batch(idx, seed=cfg.seed, **clip_args))
        noise = torch.randn(x.shape, generator=data_gen).to(device)
        t = torch.rand(cfg.batch_size, generator=data_gen).to(device)
        start = time.perf_counter()
        loss = _loss(compiled, x, y, class_text, noise, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            vals.append((step, validation_loss(compiled, class_text, val)))
            vals_fp.append((step, validation_loss(model, class_text, val)))
            if checkpoint_path:
                _write_json(checkpoint_path, _arm_summary(recipe, losses, vals, vals_fp, times, compiled, step))
        if progress:
            progress.update(task, advance=1, description=f"training {recipe}: loss {losses[-1]:.4f}")
    if weights_path:
        _save_weights(model, weights_path)
    return _arm_summary(recipe, losses, vals, vals_fp, times, compiled, cfg.steps)


def validation_set(cfg: TrainConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(class "text" embeddings [classes, 1, text_dim], [clips, labels, noise, t]) of the held-out
    validation clips, on ``cfg.device``: the same for every arm and run with the same seed."""
    gen = torch.Generator().manual_seed(cfg.seed)
    class_text = torch.randn(NUM_CLASSES, 1, cfg.model_config().text_dim, generator=gen)
    val_x, val_y = batch(range(10**6, 10**6 + cfg.eval_clips), seed=cfg.seed, **cfg.clip_arguments())
    val_noise, val_t = torch.randn(val_x.shape, generator=gen), torch.rand(cfg.eval_clips, generator=gen)
    return class_text.to(cfg.device), [t.to(cfg.device) for t in (val_x, val_y, val_noise, val_t)]


def validation_loss(model, class_text: torch.Tensor, val: list[torch.Tensor]) -> float:
    """Flow-matching loss of ``model`` on the validation set of ``validation_set``."""
    videos, labels, noise, t = val
    with torch.no_grad():
        return float(_loss(model, videos, labels, class_text, noise, t))


def _save_weights(model, path: str) -> None:
    """The trained (fp32 master) weights, written through a temporary file."""
    tmp = path + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _arm_summary(recipe, losses, vals, vals_fp, times, compiled, steps_done) -> dict:
    steady = times[min(10, len(times) - 1):]  # after capture and warm-up
    return {"recipe": recipe, "steps_done": steps_done, "loss": losses, "val": vals,
            "val_full_precision": vals_fp, "step_seconds_median": statistics.median(steady),
            "report_quantized": len(compiled.report().quantized)}


def _write_json(path: str, obj) -> None:
    """Write through a temporary file so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def plot(arms: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in arms:
        loss = torch.tensor(arm["loss"])
        k = max(1, len(loss) // 50)
        smooth = torch.nn.functional.avg_pool1d(loss[None, None], k, stride=1).flatten() if k > 1 else loss
        ax1.plot(range(k, len(loss) + 1), smooth, label=arm["recipe"])
        ax2.plot(*zip(*arm["val"]), marker="o", label=f"{arm['recipe']} (own forward)")
        ax2.plot(*zip(*arm["val_full_precision"]), linestyle="--", label=f"{arm['recipe']} weights, full-precision forward")
    ax1.set(title="training loss (moving average)", xlabel="step", ylabel="flow-matching MSE", yscale="log")
    ax2.set(title="validation loss (held-out clips)", xlabel="step", yscale="log")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: TrainConfig, out_dir: str, progress: bool = True) -> dict:
    """Train the configured arms into ``out_dir`` (``arm_<recipe>.json`` each, and the trained
    weights as ``arm_<recipe>.pt``); with both arms, also write ``loss_curves.png`` and
    ``summary.json`` (see :func:`summarize`)."""
    os.makedirs(out_dir, exist_ok=True)
    arms = []
    with Progress(disable=not progress) as bar:
        for recipe in cfg.arm_list():
            path = os.path.join(out_dir, f"arm_{recipe}.json")  # kept even if a later arm fails
            weights = os.path.join(out_dir, f"arm_{recipe}.pt")
            arm = train_arm(recipe, cfg, bar, checkpoint_path=path, weights_path=weights)
            arms.append(arm | {"config": asdict(cfg)})
            _write_json(path, arms[-1])
    if len(arms) < 2:
        return {"config": asdict(cfg), "arms": arms}
    return summarize(cfg, arms, out_dir)


def summarize(cfg: TrainConfig, arms: list[dict], out_dir: str) -> dict:
    """Compare the NVFP4 arm (``arms[0]``) with the bf16 arm at the last step both evaluated (an
    arm cut off by a time limit is compared where it stopped); write the plot and ``summary.json``."""
    step = _last_common_step(arms)
    val = [dict(a["val"])[step] for a in arms]
    val_fp = [dict(a["val_full_precision"])[step] for a in arms]
    summary = {
        "config": asdict(cfg),
        "compared_at_step": step,
        "final_val_loss": {"nvfp4": val[0], "bf16": val[1]},
        "val_loss_ratio_nvfp4_over_bf16": val[0] / val[1],
        # the NVFP4-trained weights evaluated without quantization: training quality alone
        "final_val_loss_full_precision": {a["recipe"]: v for a, v in zip(arms, val_fp)},
        "val_loss_ratio_full_precision": val_fp[0] / val_fp[1],
        "step_seconds_median": {a["recipe"]: a["step_seconds_median"] for a in arms},
        "step_time_ratio_nvfp4_over_bf16": arms[0]["step_seconds_median"] / arms[1]["step_seconds_median"],
        "arms": arms,
    }
    plot(arms, os.path.join(out_dir, "loss_curves.png"))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def summary_line(summary: dict, out_dir: str) -> str:
    """The one line ``nvfp4 train`` and examples/train_video.py print for a two-arm ``summary``."""
    final, ratio = summary["final_val_loss"], summary["val_loss_ratio_nvfp4_over_bf16"]
    return (f"final validation loss (step {summary['compared_at_step']}): NVFP4 {final['nvfp4']:.4f}, "
            f"bf16 {final['bf16']:.4f} (ratio {ratio:.3f}); "
            f"step time ratio {summary['step_time_ratio_nvfp4_over_bf16']:.2f}; wrote {out_dir}")


def val_ratios(arms: list[dict], key: str = "val") -> dict[int, float]:
    """step -> NVFP4 arm's / bf16 arm's validation loss (``key``: "val" for each arm's own forward,
    "val_full_precision"), over the steps both arms evaluated."""
    nvfp4, bf16 = (dict(arm[key]) for arm in arms)
    return {int(step): nvfp4[step] / bf16[step] for step in sorted(set(nvfp4) & set(bf16))}


def _last_common_step(arms: list[dict]) -> int:
    steps = val_ratios(arms)
    if not steps:
        raise ValueError("arms: no evaluation step in common (compare runs with the same --eval-every)")
    return max(steps)


def summarize_dir(out_dir: str, cfg: TrainConfig | None = None) -> dict:
    """Combine ``arm_nvfp4.json`` and ``arm_bf16.json`` written by two one-arm processes."""
    arms = []
    for recipe in ("nvfp4", "bf16"):
        with open(os.path.join(out_dir, f"arm_{recipe}.json")) as f:
            arms.append(json.load(f))
    if cfg is None:
        saved = dict(arms[0].get("config", {}), arms="nvfp4,bf16")
        cfg = TrainConfig(**saved)
    return summarize(cfg, arms, out_dir)
