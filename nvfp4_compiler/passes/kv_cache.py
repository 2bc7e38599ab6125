"""``nvfp4_kv_cache``: attention over a K/V cache the model keeps -> paged NVFP4 storage.

The pattern (what Dynamo captures from LongLive/CausVid-style attention that writes each chunk's
K/V into preallocated buffers and attends over the filled prefix; SDPA layout [B, H, T, D])::

    k_buf[:, :, a:b] = k                   operator.setitem(k_buf, (:, :, a:b), k)
    v_buf[:, :, a:b] = v                   operator.setitem(v_buf, (:, :, a:b), v)
    out = sdpa(q, k_buf[:, :, c:b], v_buf[:, :, c:b])

becomes ``out = kv_runtime.cached_attention(k_buf, v_buf, q, k, v, a, c, capacity, page_size)``:
the chunk's K/V are appended to a :class:`PagedNVFP4Cache` standing in for the buffers, and the
attention reads earlier tokens from the NVFP4 pages (the chunk's own K/V in full precision, as
the dense original read them back unrounded). The writes and reads of the buffers disappear.

Left alone, with the reason in the report: attention without a cache (K/V not read from a
buffer written in the same graph), masks, causal flags or dropout, a token slice on another axis,
reads that end elsewhere than the write, and buffers used by anything else in the graph.
Invariants: each converted attention node is replaced by exactly one ``cached_attention`` call
and its two buffer writes are gone; every other node is untouched.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ..kv_runtime import cached_attention
from .base import AttentionSite, CompileContext, PassResult, copy_meta_value, example_value

SDPA_TARGETS = (torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention,
                torch.ops.aten.scaled_dot_product_attention.default)
TOKEN_AXIS = 2  # SDPA's [B, H, T, D]


def _token_slice(index) -> slice | None:
    """The slice along the token axis of ``(:, :, a:b)``-style indices (every other axis full)."""
    if not isinstance(index, tuple) or len(index) not in (TOKEN_AXIS + 1, TOKEN_AXIS + 2):
        return None
    full = slice(None, None, None)
    if not all(isinstance(i, slice) for i in index):
        return None
    others = [i for axis, i in enumerate(index) if axis != TOKEN_AXIS]
    token = index[TOKEN_AXIS]
    return token if all(o == full for o in others) and token.step is None else None


def _buffer_read(node) -> tuple[fx.Node, slice] | None:
    """(buffer placeholder, token slice) when ``node`` is ``buf[:, :, c:b]``."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is operator.getitem):
        return None
    buf, index = node.args
    token = _token_slice(index)
    if not (isinstance(buf, fx.Node) and buf.op == "placeholder" and token is not None):
        return None
    return buf, token


def _buffer_writes(buf: fx.Node) -> list[fx.Node]:
    return [u for u in buf.users if u.op == "call_function" and u.target is operator.setitem and u.args[0] is buf]


def _qkv(node: fx.Node) -> tuple:
    """(query, key, value) of an SDPA call, passed positionally or by name."""
    names = ("query", "key", "value")
    return tuple(node.args[i] if i < len(node.args) else node.kwargs.get(names[i]) for i in range(3))


def _why_not(node: fx.Node) -> str | None:
    """Why an SDPA call cannot read a paged cache (None: its arguments allow it)."""
    if len(node.args) > 3 or any(k in node.kwargs and node.kwargs[k] not in (None, False, 0.0)
                                 for k in ("attn_mask", "dropout_p", "is_causal", "enable_gqa")):
        return "mask, dropout, causal or GQA arguments (the paged kernel attends to every cached token)"
    return None


def _match(node: fx.Node):
    """(k_buf, v_buf, k_write, v_write, write_slice, read_slice) of a cached attention, or a reason."""
    _, k_arg, v_arg = _qkv(node)
    reads = _buffer_read(k_arg), _buffer_read(v_arg)
    if reads[0] is None or reads[1] is None:
        return "no KV cache: K/V are not read from buffers the model keeps"
    (k_buf, k_read), (v_buf, v_read) = reads
    if k_read != v_read or k_buf is v_buf:
        return "K and V are read from different ranges or one buffer"
    writes = _buffer_writes(k_buf), _buffer_writes(v_buf)
    if len(writes[0]) != 1 or len(writes[1]) != 1:
        return "the cache buffers are not written exactly once in this graph"
    k_write, v_write = writes[0][0], writes[1][0]
    w_slice, w_slice_v = _token_slice(k_write.args[1]), _token_slice(v_write.args[1])
    if w_slice is None or w_slice != w_slice_v:
        return "the K/V writes are not one token range of both buffers"
    if w_slice.stop is not k_read.stop and w_slice.stop != k_read.stop:
        return "the attention does not read up to the end of the write"
    for buf, expected in ((k_buf, {k_write, k_arg}), (v_buf, {v_write, v_arg})):
        if set(buf.users) != expected:
            return f"the buffer {buf.name} is used by other nodes too"
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    if not (order[k_write] < order[k_arg] and order[v_write] < order[v_arg]):
        return "the attention reads the buffers before they are written"
    return k_buf, v_buf, k_write, v_write, w_slice, k_read


def _rewrite(graph: fx.Graph, node: fx.Node, match, ctx: CompileContext) -> AttentionSite:
    k_buf, v_buf, k_write, v_write, w_slice, read = match
    q, k_read, v_read = _qkv(node)
    capacity = example_value(k_buf).shape[TOKEN_AXIS]
    scale = node.kwargs.get("scale")
    with graph.inserting_before(node):
        new = graph.call_function(cached_attention, (
            k_buf, v_buf, q, k_write.args[2], v_write.args[2], w_slice.start or 0, read.start or 0,
            capacity, ctx.config.kv_page_size), {"scale": scale})
    copy_meta_value(new, example_value(node))
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    for dead in (k_read, v_read, k_write, v_write):
        if not dead.users:
            graph.erase_node(dead)
    names = ctx.param_names
    return AttentionSite(ctx.graph_id, node.name, True,
                         f"KV cache in paged NVFP4 ({ctx.config.kv_page_size}-token pages)",
                         names.get(k_buf.name, k_buf.name), names.get(v_buf.name, v_buf.name), capacity)


def nvfp4_kv_cache(gm: fx.GraphModule, ctx: CompileContext) -> PassResult:
    """Rewrite every cached attention of ``gm`` (see the module docstring); record every SDPA call."""
    count, converted = 0, []
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target in SDPA_TARGETS):
            continue
        if not ctx.config.kv_cache or torch.is_grad_enabled():
            why = "Config.kv_cache is off" if not ctx.config.kv_cache else "a training graph (caches are for inference)"
            ctx.attention_sites.append(AttentionSite(ctx.graph_id, node.name, False, why))
            continue
        reason = _why_not(node)
        match = _match(node) if reason is None else reason
        if isinstance(match, str):
            ctx.attention_sites.append(AttentionSite(ctx.graph_id, node.name, False, match))
            continue
        ctx.attention_sites.append(_rewrite(gm.graph, node, match, ctx))
        converted.extend(match[:2])
        count += 1
    if count:
        _check(gm, converted)
        gm.recompile()
    return PassResult(gm, count > 0, count)


def _check(gm: fx.GraphModule, buffers: list[fx.Node]) -> None:
    """The converted buffers are no longer read or written; the graph is well formed."""
    for buf in buffers:
        left = [u.name for u in buf.users if u.target is not cached_attention]
        if left:
            raise AssertionError(f"nvfp4_kv_cache: buffer {buf.name} still used by {left}")
    gm.graph.lint()
