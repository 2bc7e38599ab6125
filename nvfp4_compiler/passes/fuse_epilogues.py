"""Pass ``fuse_epilogues``: fold what follows each NVFP4 GEMM into its epilogue.

Bias is folded by ``quantize_gemms`` already (it is the linear's own). This pass folds, in order:

1. Activation.   Matches:  y = gemm(...)[0];  z = gelu(y) | gelu(y, approximate="tanh") | silu(y) | relu(y)
                 Rewrite to: z = gemm(..., activation=...)[0]                   (y has no other user)
2. Gate.         Matches:  z = y * g  or  g * y,  g a tensor that broadcasts to y's shape
                 Rewrite to: gemm(..., gate=g)
3. Residual.     Matches:  r + z  or  z + r,  r of z's shape and dtype
                 Rewrite to: gemm(..., residual=r)
4. Next scale.   Matches:  quantize(out, None, ...) where ``out`` is a GEMM's output (dynamic scales)
                 Rewrite to: quantize(out, gemm(...)[1], ...): the producer's epilogue reduces
                 max |out| while it writes ``out``, so the consumer skips its own pass over memory.
5. NVFP4 output. Matches:  quantize(out, amax_buffer, 1) where ``out`` is a GEMM's output read by
                 nothing else and N % 16 == 0 (static scales: the amax is known before the GEMM runs)
                 Rewrite to: gemm_quantize(..., amax_buffer): the epilogue writes the next GEMM's
                 NVFP4 operand; ``out`` is never written in bf16 (one envelope boundary fewer).

Requires: ``quantize_gemms`` has run. Ensures: the graph computes the same function (the
reference backend evaluates the epilogue in fp32 and rounds once, see backends/reference.py);
every folded node is erased; each GEMM's site lists what was folded into it.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .. import ops
from .base import CompileContext, PassResult, copy_meta_value, example_value, getitem, is_call, only_user

# gemm(a_data, a_scale, a_gs, w_data, w_scale, w_gs, bias, activation, gate, residual, out_dtype, backend)
ACT, GATE, RESIDUAL = 7, 8, 9

ACTIVATION_TARGETS = {
    torch._C._nn.gelu: "gelu",
    torch.nn.functional.gelu: "gelu",
    torch.nn.functional.silu: "silu",
    torch.nn.functional.relu: "relu",
    torch.relu: "relu",
    torch.ops.aten.gelu.default: "gelu",
    torch.ops.aten.silu.default: "silu",
    torch.ops.aten.relu.default: "relu",
}
MUL_TARGETS = (operator.mul, torch.mul, torch.ops.aten.mul.Tensor)
ADD_TARGETS = (operator.add, torch.add, torch.ops.aten.add.Tensor)


def _gemm_of(out: fx.Node) -> fx.Node | None:
    """The GEMM node whose output 0 is ``out``, if ``out`` is one."""
    if is_call(out, (operator.getitem,)) and out.args[1] == 0 and is_call(out.args[0], (ops.GEMM,)):
        return out.args[0]
    return None


def activation_name(node: fx.Node) -> str | None:
    if not is_call(node, tuple(ACTIVATION_TARGETS)):
        return None
    name = ACTIVATION_TARGETS[node.target]
    extra_args = node.args[1:]
    if name == "gelu":
        approx = node.kwargs.get("approximate", extra_args[0] if extra_args else "none")
        return "gelu_tanh" if approx == "tanh" else "gelu" if approx == "none" else None
    if node.kwargs.get("inplace") or (extra_args and extra_args[0] is True):
        return None
    return name


def _other_operand(node: fx.Node, out: fx.Node) -> fx.Node | None:
    if len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    other = b if a is out else a if b is out else None
    return other if isinstance(other, fx.Node) and other is not out else None


def _set(gemm: fx.Node, index: int, value) -> None:
    args = list(gemm.args)
    args[index] = value
    gemm.args = tuple(args)


def _replace(node: fx.Node, out: fx.Node) -> None:
    copy_meta_value(out, example_value(node))
    node.replace_all_uses_with(out)
    node.graph.erase_node(node)


def _fold_activation(gemm: fx.Node, out: fx.Node) -> str | None:
    user = only_user(out)
    name = activation_name(user) if user is not None else None
    if name is None or gemm.args[ACT] != "none" or gemm.args[GATE] is not None or gemm.args[RESIDUAL] is not None:
        return None
    _set(gemm, ACT, name)
    _replace(user, out)
    return name


def _fold_gate(gemm: fx.Node, out: fx.Node) -> str | None:
    user = only_user(out)
    if user is None or not is_call(user, MUL_TARGETS) or gemm.args[GATE] is not None or gemm.args[RESIDUAL] is not None:
        return None
    gate = _other_operand(user, out)
    yv, gv, zv = example_value(out), example_value(gate), example_value(user)
    if gate is None or gv is None or yv is None or zv is None or zv.shape != yv.shape or zv.dtype != yv.dtype:
        return None
    if _depends_on(gate, gemm):
        return None
    _set(gemm, GATE, gate)
    _replace(user, out)
    return "gate"


def _fold_residual(gemm: fx.Node, out: fx.Node) -> str | None:
    user = only_user(out)
    if user is None or not is_call(user, ADD_TARGETS) or gemm.args[RESIDUAL] is not None:
        return None
    residual = _other_operand(user, out)
    yv, rv, zv = example_value(out), example_value(residual), example_value(user)
    if residual is None or rv is None or yv is None or zv is None:
        return None
    if rv.shape != yv.shape or zv.shape != yv.shape or zv.dtype != yv.dtype or _depends_on(residual, gemm):
        return None
    _set(gemm, RESIDUAL, residual)
    _replace(user, out)
    return "residual"


def _depends_on(node: fx.Node, gemm: fx.Node) -> bool:
    """Whether ``node`` is computed from ``gemm`` (folding it in would create a cycle)."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current is gemm:
            return True
        if current in seen:
            continue
        seen.add(current)
        stack.extend(a for a in current.all_input_nodes)
    return False


def _move_gemm_after_its_inputs(gemm: fx.Node) -> None:
    """A folded gate/residual may be defined after the GEMM: move the GEMM down to keep topological order."""
    order = {n: i for i, n in enumerate(gemm.graph.nodes)}
    last_input = max(gemm.all_input_nodes, key=order.__getitem__)
    if order[last_input] > order[gemm]:
        last_input.append(gemm)
    out_nodes = sorted(gemm.users, key=order.__getitem__)
    anchor = gemm
    for user in out_nodes:
        anchor.append(user)
        anchor = user


def _set_input_scale(ctx: CompileContext, consumers: list[str], how: str) -> None:
    """Record on the consuming GEMMs' sites how their activation's scale is now found."""
    for site in ctx.sites:
        if site.name in consumers and site.graph_id == ctx.graph_id:
            site.input_scale = how


def _fuse_next_scale(graph: fx.Graph, ctx: CompileContext) -> int:
    count = 0
    for q in [n for n in graph.nodes if is_call(n, (ops.QUANTIZE,))]:
        producer = _gemm_of(q.args[0])
        if producer is None or q.args[1] is not None:
            continue
        with graph.inserting_after(q.args[0]):
            amax = getitem(graph, producer, 1)
        copy_meta_value(amax, torch.empty((), dtype=torch.float32, device="meta"))
        q.args = (q.args[0], amax, *q.args[2:])
        ctx.site_of_node[producer.name].epilogue.append("next-scale amax")
        _set_input_scale(ctx, q.meta.get("nvfp4_input_of", []), "dynamic, amax from the producing GEMM's epilogue")
        count += 1
    return count


def _fuse_static_quantize(graph: fx.Graph, ctx: CompileContext) -> int:
    count = 0
    for q in [n for n in graph.nodes if is_call(n, (ops.QUANTIZE,))]:
        out, amax, tile_rows = q.args[:3]
        producer = _gemm_of(out)
        value = example_value(out)
        if producer is None or amax is None or tile_rows != 1 or len(out.users) != 1 or len(producer.users) != 1:
            continue
        if q.kwargs.get("four_over_six"):  # the quantizing epilogues use the spec's block scales only
            continue
        if value is None or value.shape[-1] % 16:
            continue
        with graph.inserting_before(q):
            fused = graph.call_function(ops.GEMM_QUANTIZE, (*producer.args[:-1], amax, producer.args[-1]))
        fused.meta["nvfp4_weight_placeholder"] = producer.meta["nvfp4_weight_placeholder"]  # runtime slots
        fused.meta["nvfp4_input_of"] = q.meta.get("nvfp4_input_of", [])
        q.replace_all_uses_with(fused)
        graph.erase_node(q)
        graph.erase_node(out)
        graph.erase_node(producer)
        site = ctx.site_of_node.pop(producer.name)
        ctx.site_of_node[fused.name] = site
        site.epilogue.append("NVFP4 output (static scale)")
        _set_input_scale(ctx, fused.meta["nvfp4_input_of"], "static, quantized in the producing GEMM's epilogue")
        count += 1
    return count


def fuse_epilogues(gm: fx.GraphModule, ctx: CompileContext) -> PassResult:
    """Fold activation, gate, residual and the next quantization (its amax; with static scales,
    all of it) into GEMM epilogues."""
    graph = gm.graph
    count = 0
    for gemm in [n for n in graph.nodes if is_call(n, (ops.GEMM,))]:
        out = next((u for u in gemm.users if u.args[1] == 0), None)
        if out is None:
            continue
        site = ctx.site_of_node[gemm.name]
        for fold in (_fold_activation, _fold_gate, _fold_residual):
            folded = fold(gemm, out)
            if folded:
                site.epilogue.append(folded)
                count += 1
        _move_gemm_after_its_inputs(gemm)
    count += _fuse_next_scale(graph, ctx)
    count += _fuse_static_quantize(graph, ctx)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return PassResult(gm, count > 0, count)
