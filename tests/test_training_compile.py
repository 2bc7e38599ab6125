"""Training through nvfp4.compile: the rewritten graph trains with the recipe, and the loss falls."""

import copy

import torch
from torch import nn

import nvfp4_compiler as nvfp4
from nvfp4_compiler.models import build_model, example_inputs
from nvfp4_compiler.training import nvfp4_linear
from saved_bytes import saved_activation_bytes


def test_compiled_layer_gradients_equal_the_recipe():
    torch.manual_seed(0)
    layer = nn.Linear(48, 32)
    x = torch.randn(20, 48, requires_grad=True)
    dy = torch.randn(20, 32)
    compiled = nvfp4.compile(layer)
    torch.manual_seed(7)
    compiled(x).backward(dy)
    got = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    x.grad = layer.weight.grad = layer.bias.grad = None
    torch.manual_seed(7)
    nvfp4_linear(x, layer.weight, layer.bias).backward(dy)
    for ours, recipe in zip(got, (x.grad, layer.weight.grad, layer.bias.grad)):
        assert torch.allclose(ours, recipe, rtol=1e-5, atol=1e-5)
    assert "training" in compiled.report().quantized[0].strategy


def _flow_matching_loss(model, data, noise, t):
    """LongLive/Wan convention: x_t = t * noise + (1 - t) * data, velocity = noise - data."""
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = tt * noise + (1 - tt) * data
    _, timestep, text = example_inputs(model.cfg if hasattr(model, "cfg") else model.model.cfg, batch=data.shape[0])
    pred = model(x_t, t * 1000, text)
    return (pred - (noise - data)).square().mean()


def _train(recipe: str, steps: int = 30):
    model = build_model("tiny", seed=0).train()
    trained = nvfp4.compile(model, recipe=recipe)
    gen = torch.Generator().manual_seed(1)
    cfg = model.cfg
    shape = (4, cfg.in_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width)
    # structured "videos": a bright square drifting across the frames, per-sample colour
    data = torch.zeros(shape)
    for i in range(4):
        for f in range(cfg.chunk_frames):
            data[i, :, f, 2 + i % 3: 5 + i % 3, f + i: f + i + 3] = torch.randn(cfg.in_channels, 1, 1, generator=gen)
    eval_noise, eval_t = torch.randn(shape, generator=gen), torch.rand(4, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(_flow_matching_loss(model, data, eval_noise, eval_t))
    torch.manual_seed(2)
    for _ in range(steps):
        loss = _flow_matching_loss(trained, data, torch.randn(shape), torch.rand(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(_flow_matching_loss(model, data, eval_noise, eval_t))
    return before, after, trained


def test_tiny_model_trains_in_both_arms():
    before, after_nvfp4, trained = _train("nvfp4")
    assert len(trained.report().quantized) == 27
    before_bf16, after_bf16, baseline = _train("bf16")
    assert before == before_bf16  # same seed, same start
    assert not baseline.report().quantized
    assert after_nvfp4 < 0.7 * before and after_bf16 < 0.7 * before


def test_folded_activation_is_recomputed_bit_for_bit_and_not_saved():
    """GELU folded into the FFN's first linear: backward recomputes its input from the NVFP4
    operands. Same gradients as keeping it (stochastic rounding off, so the draws cannot differ),
    fewer bytes kept for backward."""
    model = build_model("tiny", seed=0).train()
    inputs = example_inputs(model.cfg)
    runs = {}
    for recompute in (False, True):
        torch._dynamo.reset()
        twin = copy.deepcopy(model)
        trained = nvfp4.compile(twin, recompute_activations=recompute, stochastic_gradients=False)
        trained(*inputs).square().mean().backward()
        grads = [p.grad.clone() for p in twin.parameters()]
        twin.zero_grad()
        runs[recompute] = grads, saved_activation_bytes(trained, inputs, twin.parameters()), trained.report()
    (kept, kept_bytes, _), (recomputed, recomputed_bytes, report) = runs[False], runs[True]
    for a, b in zip(kept, recomputed):
        assert torch.equal(a, b)
    folded = {g.name for g in report.quantized if any("recomputed" in e for e in g.epilogue)}
    assert {f"blocks.{i}.ffn.up" for i in range(model.cfg.num_layers)} <= folded
    # what is no longer kept: at least each block's [tokens, ffn_dim] fp32 GELU input, less its NVFP4 x
    cfg = model.cfg
    assert kept_bytes - recomputed_bytes > 0.5 * cfg.num_layers * cfg.chunk_tokens * cfg.ffn_dim * 4
