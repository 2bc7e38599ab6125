"""Pass ``quantize_gemms``: put every eligible linear into NVFP4 (W4A4).

Matches:
    y = linear(x, W, b)                  W a parameter [N, K], K % 16 == 0 (or Config.pad_k),
                                         float dtype, not excluded by Config
Rewrite to:
    xd, xs, xg = nvfp4.quantize(x, amax, 1)          one per distinct x: q/k/v share theirs
    y, _ = nvfp4.gemm(xd, xs, xg, Wd, Ws, Wg, b, "none", None, None, dtype)
where Wd/Ws/Wg are the weight pre-quantized once at compile time (1x16 blocks), held as
buffers of the graph module, and ``amax`` is None (dynamic: the tensor's own amax each call) or
a calibrated buffer (Config.activation_scales == "static").

Requires: a graph with fake-tensor metadata (Dynamo's ``example_value`` or export's ``val``).
Ensures: no eligible linear is left; every linear left is recorded with the reason it stays.
"""

from __future__ import annotations


import torch
import torch.fx as fx

from .. import ops
from ..calibration import STATIC_AMAX_PREFIX
from ..config import FLOAT_DTYPES
from .base import (
    LINEAR_TARGETS,
    CompileContext,
    GemmSite,
    PassResult,
    copy_meta_value,
    example_value,
    getitem,
    is_call,
    only_user,
)

UNLOWERED = "reference"  # backend until `lower` chooses one


def _linear_args(node: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node | None]:
    args = list(node.args) + [None] * (3 - len(node.args))
    x = node.kwargs.get("input", args[0])
    w = node.kwargs.get("weight", args[1])
    b = node.kwargs.get("bias", args[2])
    return x, w, b


def _ineligible_reason(ctx: CompileContext, module: str | None, x, w) -> str | None:
    xv, wv = example_value(x), example_value(w)
    if module is None:
        return "weight is not a parameter of the model (activation x activation product)"
    if wv is None or xv is None or wv.dim() != 2:
        return "weight is not a 2-D tensor with known shape"
    if xv.dtype not in FLOAT_DTYPES:
        return f"unsupported activation dtype {xv.dtype}"
    return ctx.config.linear_exclusion_reason(module, wv.shape[1], wv.dtype, ctx.num_blocks)


def _register_weight(gm: fx.GraphModule, prefix: str, weight: torch.Tensor, cache) -> tuple[str, str, str, int]:
    """Buffers holding the weight's NVFP4 copy (from the runtime's cache: quantized once)."""
    assert cache is not None, "quantize_gemms: CompileContext.weight_cache is required"
    q = cache.get(weight)
    names = (f"{prefix}_data", f"{prefix}_scale", f"{prefix}_global_scale")
    for attr, tensor in zip(names, (q.data, q.scale, q.global_scale)):
        gm.register_buffer(attr, tensor)
    return (*names, q.nbytes)


def _static_amax_buffer(gm: fx.GraphModule, index: int, device: torch.device) -> str:
    name = f"{STATIC_AMAX_PREFIX}{index}"
    # NaN marks "not calibrated yet"; calibrate() fills it with the observed max |x|.
    gm.register_buffer(name, torch.full((), float("nan"), device=device))
    return name


def quantize_gemms(gm: fx.GraphModule, ctx: CompileContext) -> PassResult:
    """Rewrite eligible linears into nvfp4.quantize + nvfp4.gemm (see module docstring)."""
    graph = gm.graph
    quantized_inputs: dict[fx.Node, tuple[fx.Node, fx.Node, fx.Node]] = {}
    count = 0
    for node in list(graph.nodes):
        if not is_call(node, LINEAR_TARGETS):
            continue
        x, w, b = _linear_args(node)
        wname = ctx.param_names.get(w.name) if isinstance(w, fx.Node) else None
        module = wname.rsplit(".", 1)[0] if wname else f"<{node.name}>"
        xv, wv, yv = example_value(x), example_value(w), example_value(node)
        n, k = (wv.shape if wv is not None and wv.dim() == 2 else (0, 0))
        m = xv.numel() // max(k, 1) if xv is not None else 0
        site = GemmSite(module, ctx.graph_id, m, k, n, yv.dtype if yv is not None else torch.float32)
        ctx.sites.append(site)
        reason = _ineligible_reason(ctx, module if wname else None, x, w)
        if reason is not None:
            site.reason = reason
            site.weight_bytes_before = site.weight_bytes_after = wv.numel() * wv.element_size() if wv is not None else 0
            continue

        if torch.is_grad_enabled() and wv.requires_grad:  # a training graph: all three GEMMs in NVFP4
            _rewrite_for_training(graph, node, x, w, b, ctx, site)
            count += 1
            continue
        prefix = f"_nvfp4_w{count}"
        wd, ws, wg, qbytes = _register_weight(gm, prefix, ctx.params[w.name], ctx.weight_cache)
        site.weight_bytes_before = wv.numel() * wv.element_size()
        site.weight_bytes_after = qbytes
        with graph.inserting_before(node):
            if x not in quantized_inputs:
                amax = None
                if ctx.config.activation_scales == "static":
                    amax = graph.get_attr(_static_amax_buffer(gm, len(quantized_inputs), xv.device))
                four_six = {"four_over_six": True} if ctx.config.four_over_six else {}  # a keyword: backend stays last
                q = graph.call_function(ops.QUANTIZE, (x, amax, 1, UNLOWERED), four_six)
                q.meta["nvfp4_input_of"] = []
                quantized_inputs[x] = (getitem(graph, q, 0), getitem(graph, q, 1), getitem(graph, q, 2))
            xd, xs, xg = quantized_inputs[x]
            xd.args[0].meta["nvfp4_input_of"].append(module)
            weights = [graph.get_attr(a) for a in (wd, ws, wg)]
            gemm = graph.call_function(ops.GEMM, (xd, xs, xg, *weights, b, "none", None, None, site.dtype, UNLOWERED))
            gemm.meta["nvfp4_weight_placeholder"] = w.name  # lets the runtime re-quantize a changed weight
            out = getitem(graph, gemm, 0)
        copy_meta_value(out, yv)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        site.quantized = True
        site.input_scale = ctx.config.activation_scales
        if b is not None:
            site.epilogue.append("bias")
        ctx.site_of_node[gemm.name] = site
        count += 1

    graph.eliminate_dead_code()
    gm.recompile()
    _check(gm, ctx)
    return PassResult(gm, count > 0, count)


def _rewrite_for_training(graph: fx.Graph, node: fx.Node, x, w, b, ctx: CompileContext, site: GemmSite) -> None:
    """linear(x, W, b) [-> act] -> nvfp4.linear_train(x, W, b, act, switches)[0]: NVFP4 fprop, dgrad,
    wgrad. An activation that is the linear's only user is folded in (Config.recompute_activations),
    so backward recomputes its input from the NVFP4 operands instead of autograd keeping it."""
    from ..training_ops import LINEAR_TRAIN
    from .fuse_epilogues import activation_name

    recipe = ctx.config.training_recipe()
    user = only_user(node)
    activation = activation_name(user) if user is not None and ctx.config.recompute_activations else None
    replaced = user if activation else node
    with graph.inserting_before(node):
        train = graph.call_function(LINEAR_TRAIN, (x, w, b, activation or "none", recipe.weight_tiles_2d,
                                                   recipe.rht_wgrad, recipe.stochastic_gradients,
                                                   recipe.four_over_six, recipe.kernels))
        new = getitem(graph, train, 0)
    copy_meta_value(new, example_value(replaced))
    replaced.replace_all_uses_with(new)
    if activation:
        graph.erase_node(user)
        site.epilogue.append(f"{activation} (its input recomputed in backward, not saved)")
    graph.erase_node(node)
    wv = example_value(w)
    site.quantized, site.input_scale = True, "dynamic"
    site.backend = recipe.backend_name(wv)
    site.strategy = "training: fprop/dgrad/wgrad in NVFP4 (16x16 weights, RHT wgrad, SR gradients)"
    if recipe.four_over_six:
        site.strategy += "; Four Over Six block scales on the fprop operands"
    site.weight_bytes_before = site.weight_bytes_after = wv.numel() * wv.element_size()  # fp32 master weights
    if b is not None:
        site.epilogue.append("bias")


def _check(gm: fx.GraphModule, ctx: CompileContext) -> None:
    """Invariant: the linears left in the graph are exactly the sites recorded as not quantized."""
    left = sum(1 for n in gm.graph.nodes if is_call(n, LINEAR_TARGETS))
    kept = sum(1 for s in ctx.sites if not s.quantized)
    assert left == kept, f"quantize_gemms: {left} linears left in the graph but {kept} recorded as kept"
    gm.graph.lint()
