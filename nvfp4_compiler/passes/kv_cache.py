"""``nvfp4_kv_cache``: attention over a K/V cache the model keeps -> paged NVFP4 storage.

The pattern (what Dynamo captures from LongLive/CausVid-style attention that writes each chunk's
K/V into preallocated buffers and attends over the filled prefix), with buffers in SDPA's layout
[B, H, T, D]::

    k_buf[:, :, a:b] = k                   operator.setitem(k_buf, (:, :, a:b), k)
    v_buf[:, :, a:b] = v                   operator.setitem(v_buf, (:, :, a:b), v)
    out = sdpa(q, k_buf[:, :, c:b], v_buf[:, :, c:b])

optionally after a roll that drops the ``e`` oldest tokens after a sink of ``s`` (LongLive's sink
and rolling window: ``k_buf[:, :, s:s+n] = k_buf[:, :, s+e:s+e+n].clone()``, becoming ``roll=(s,
s+n, s+e, s+e+n)``), or in flash-attn's layout [B, T, H, D] (Wan's and LongLive's), read through a transpose::

    k_buf[:, a:b] = k;  v_buf[:, a:b] = v
    out = sdpa(q, k_buf[:, c:b].transpose(1, 2), v_buf[:, c:b].transpose(1, 2))   # or .permute(0, 2, 1, 3)

becomes ``out = kv_runtime.cached_attention(k_buf, v_buf, q, k, v, a, c, capacity, page_size,
token_axis=2 or 1)``: the chunk's K/V are appended to a :class:`PagedNVFP4Cache` standing in for
the buffers, and the attention reads earlier tokens from the NVFP4 pages (the chunk's own K/V in
full precision, as the dense original read them back unrounded). The writes and reads of the
buffers disappear.

Past K/V that come in as graph inputs and are concatenated with the chunk's (Hugging Face's legacy
``past_key_values``; in either layout, the concatenation also returned as the next past)::

    k_all = torch.cat([past_k, k], dim=2);  v_all = torch.cat([past_v, v], dim=2)
    out = sdpa(q, k_all, v_all)            # k_all, v_all: graph outputs too

become ``out, k_all, v_all = kv_runtime.concat_attention(past_k, past_v, q, k, v, page_size,
token_axis=...)``, whose ``k_all``, ``v_all`` are handles to the NVFP4 pages (see kv_runtime).

Left alone, with the reason in the report: attention without a cache (K/V neither read from a
buffer written in the same graph nor concatenated to graph inputs), masks, causal flags or dropout, a token slice on another axis,
reads that end elsewhere than the write, and buffers used by anything else in the graph.
Invariants: each converted attention node is replaced by exactly one ``cached_attention`` or
``concat_attention`` call and its two buffer writes or concatenations are gone; every other node
is untouched.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import torch
import torch.fx as fx

from ..kv_runtime import cached_attention, concat_attention
from .base import AttentionSite, CompileContext, PassResult, copy_meta_value, example_value

SDPA_TARGETS = (torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention,
                torch.ops.aten.scaled_dot_product_attention.default)
CAT_TARGETS = (torch.cat, torch.concat, torch.concatenate)
SDPA_TOKEN_AXIS = 2    # SDPA's [B, H, T, D]
FLASH_TOKEN_AXIS = 1   # flash-attn's [B, T, H, D], swapped to SDPA's by transpose(1, 2) / permute(0, 2, 1, 3)


@dataclass(frozen=True)
class BufferRead:
    """``buf[..., c:b, ...]`` along ``token_axis``, as SDPA gets it; ``nodes`` are the read's own
    nodes (the slice, then the transpose for flash-attn's layout), erased with the attention."""
    buf: fx.Node
    tokens: slice
    token_axis: int
    nodes: tuple[fx.Node, ...]


def _token_slice(index, axis: int) -> slice | None:
    """The slice along ``axis`` of ``(:, a:b)`` / ``(:, :, a:b)``-style indices (every other axis full)."""
    if not isinstance(index, tuple) or not axis + 1 <= len(index) <= 4:
        return None
    full = slice(None, None, None)
    if not all(isinstance(i, slice) for i in index):
        return None
    others = [i for a, i in enumerate(index) if a != axis]
    token = index[axis]
    return token if all(o == full for o in others) and token.step is None else None


def _buffer_slice(node, axis: int) -> tuple[fx.Node, slice] | None:
    """(buffer placeholder, token slice) when ``node`` is a token slice of a graph input along ``axis``."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is operator.getitem):
        return None
    buf, index = node.args
    token = _token_slice(index, axis)
    if not (isinstance(buf, fx.Node) and buf.op == "placeholder" and token is not None):
        return None
    return buf, token


def _swaps_tokens_and_heads(node) -> bool:
    """Whether ``node`` is ``x.transpose(1, 2)`` (either order) or ``x.permute(0, 2, 1, 3)``."""
    if not (isinstance(node, fx.Node) and len(node.args) >= 2 and not node.kwargs):
        return False
    is_method = node.op == "call_method"
    if (is_method and node.target == "transpose") or (node.op == "call_function" and node.target is torch.transpose):
        return sorted(node.args[1:]) == [1, 2]
    if (is_method and node.target == "permute") or (node.op == "call_function" and node.target is torch.permute):
        dims = node.args[1:] if is_method and len(node.args) > 2 else node.args[1]
        return tuple(dims) == (0, 2, 1, 3)
    return False


def _through_layout(node) -> tuple[object, int, tuple]:
    """(what an SDPA K/V argument is taken from, its token axis, the nodes from the argument to
    it): the argument itself in SDPA's layout, or what a transpose to it swaps in flash-attn's."""
    if _swaps_tokens_and_heads(node):
        return node.args[0], FLASH_TOKEN_AXIS, (node, node.args[0])
    return node, SDPA_TOKEN_AXIS, (node,)


def _buffer_read(node) -> BufferRead | None:
    """How an SDPA K/V argument reads a cache buffer, in either layout (the module docstring)."""
    source, axis, nodes = _through_layout(node)
    found = _buffer_slice(source, axis)
    return BufferRead(*found, axis, nodes) if found is not None else None


@dataclass(frozen=True)
class PastConcat:
    """``cat([past, fresh], token_axis)`` as SDPA gets it (through a transpose for flash-attn's
    layout, the first of ``nodes``; the concatenation is the last)."""
    past: fx.Node
    fresh: fx.Node
    token_axis: int
    nodes: tuple[fx.Node, ...]


def _past_concat(node) -> PastConcat | None:
    """How an SDPA K/V argument concatenates a graph input (the past) with the chunk's K/V."""
    read, axis, nodes = _through_layout(node)
    if not (isinstance(read, fx.Node) and read.op == "call_function" and read.target in CAT_TARGETS):
        return None
    tensors = read.args[0]
    dim = read.args[1] if len(read.args) > 1 else read.kwargs.get("dim", read.kwargs.get("axis", 0))
    if not (isinstance(tensors, (list, tuple)) and len(tensors) == 2 and dim in (axis, axis - 4)):
        return None
    past, fresh = tensors
    if not (isinstance(past, fx.Node) and past.op == "placeholder"):
        return None
    return PastConcat(past, fresh, axis, nodes)


def _match_concat(node: fx.Node):
    """(K concat, V concat) of an attention over concatenated past K/V, a reason, or None where
    K and V are not such concatenations."""
    _, k_arg, v_arg = _qkv(node)
    k_cat, v_cat = _past_concat(k_arg), _past_concat(v_arg)
    if k_cat is None or v_cat is None:
        return None
    if k_cat.token_axis != v_cat.token_axis or k_cat.past is v_cat.past:
        return "K and V concatenate different layouts or one past"
    for cat in (k_cat, v_cat):
        concatenated, transposed = cat.nodes[-1], cat.nodes[:-1]
        if set(cat.past.users) != {concatenated}:
            return f"the past {cat.past.name} is used by other nodes too"
        reader = transposed[0] if transposed else node
        if any(len(t.users) != 1 for t in transposed) or any(u is not reader and u.op != "output"
                                                             for u in concatenated.users):
            return "the concatenated K/V are used by other nodes than the attention and the graph's outputs"
        if not any(u.op == "output" for u in concatenated.users):
            return "the concatenated K/V are not returned as the next past (nothing would keep NVFP4 pages)"
    return k_cat, v_cat


def _rewrite_concat(graph: fx.Graph, node: fx.Node, match, ctx: CompileContext) -> AttentionSite:
    k_cat, v_cat = match
    q = _qkv(node)[0]
    with graph.inserting_before(node):
        call = graph.call_function(concat_attention, (
            k_cat.past, v_cat.past, q, k_cat.fresh, v_cat.fresh, ctx.config.kv_page_size),
            {"scale": node.kwargs.get("scale"), "token_axis": k_cat.token_axis})
        out, k_all, v_all = (graph.call_function(operator.getitem, (call, i)) for i in range(3))
    copy_meta_value(out, example_value(node))
    node.replace_all_uses_with(out)
    graph.erase_node(node)
    for cat, handle in ((k_cat, k_all), (v_cat, v_all)):
        for dead in cat.nodes[:-1]:  # the transpose SDPA read through
            if not dead.users:
                graph.erase_node(dead)
        concatenated = cat.nodes[-1]
        copy_meta_value(handle, example_value(concatenated))
        concatenated.replace_all_uses_with(handle)  # what is left: the graph's outputs (the next past)
        graph.erase_node(concatenated)
    layout = "[B, H, T, D]" if k_cat.token_axis == SDPA_TOKEN_AXIS else "[B, T, H, D]"
    return AttentionSite(ctx.graph_id, node.name, True,
                         f"past K/V concatenated {layout} -> paged NVFP4 ({ctx.config.kv_page_size}-token pages); "
                         "the returned past is a handle to the pages", _input_name(k_cat.past), _input_name(v_cat.past))


def _shown(bound) -> str:
    """A slice bound for the report: its value, or the graph value a symbolic one comes from."""
    return str(bound) if not isinstance(bound, fx.Node) else f"<{bound.name}>"


def _input_name(placeholder: fx.Node) -> str:
    """How the caller passed a graph input: ``past[0]`` for Dynamo's source ``L['past'][0]``."""
    source = getattr(placeholder.meta.get("grapharg"), "source", None)
    return re.sub(r"^L\['([^']+)'\]", r"\1", source.name) if source is not None else placeholder.name


def _same_bound(a, b) -> bool:
    """Whether two slice bounds are the same position: equal ints, or graph values of one symbolic
    expression (with ``Config.dynamic_ints`` the K and V writes compute their bounds separately)."""
    if isinstance(a, fx.Node) and isinstance(b, fx.Node) and a is not b:
        a_value, b_value = (n.meta.get("example_value") for n in (a, b))
        return isinstance(a_value, torch.SymInt) and isinstance(b_value, torch.SymInt) and \
            str(a_value.node.expr) == str(b_value.node.expr)
    return a is b or (not isinstance(a, fx.Node) and not isinstance(b, fx.Node) and a == b)


def _same_slice(a: slice, b: slice) -> bool:
    return all(_same_bound(x, y) for x, y in ((a.start or 0, b.start or 0), (a.stop, b.stop), (a.step, b.step)))


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


@dataclass(frozen=True)
class RollCopy:
    """``buf[dst_start:dst_stop] = buf[src_start:src_stop].clone()`` before the chunk's write:
    LongLive's roll, which drops ``src_start - dst_start`` tokens after a sink of ``dst_start``.
    The bounds are ints or, for positions Dynamo keeps symbolic, graph values (the runtime checks
    them); ``nodes`` are the copy's slice, clone and write."""
    bounds: tuple  # dst_start, dst_stop, src_start, src_stop
    nodes: tuple[fx.Node, ...]


def _roll_copy(write: fx.Node, buf: fx.Node, axis: int) -> RollCopy | None:
    """``write`` as a roll of ``buf`` along ``axis``, or None."""
    value = write.args[2]
    is_clone = isinstance(value, fx.Node) and (
        (value.op == "call_method" and value.target == "clone") or (value.op == "call_function" and value.target is torch.clone))
    found = _buffer_slice(value.args[0], axis) if is_clone else None
    dst = _token_slice(write.args[1], axis)
    if found is None or found[0] is not buf or dst is None or dst.stop is None or found[1].stop is None:
        return None
    src = found[1]
    bounds = (dst.start or 0, dst.stop, src.start or 0, src.stop)
    if all(isinstance(b, int) for b in bounds) and not (
            bounds[2] > bounds[0] and bounds[3] - bounds[2] == bounds[1] - bounds[0] >= 0):
        return None  # a copy down by a positive offset, of equal lengths, is a roll; this is not
    return RollCopy(bounds, (value.args[0], value, write))


@dataclass(frozen=True)
class BufferMatch:
    """A cached attention over buffers: the reads SDPA gets, the chunk's writes, the rolls before them."""
    k_read: BufferRead
    v_read: BufferRead
    k_write: fx.Node
    v_write: fx.Node
    tokens: slice                 # the written token range
    k_roll: RollCopy | None
    v_roll: RollCopy | None


def _chunk_write_and_roll(read: BufferRead):
    """(the chunk's write, the roll before it or None) of a buffer, or a reason."""
    writes = _buffer_writes(read.buf)
    rolls = [r for r in (_roll_copy(w, read.buf, read.token_axis) for w in writes) if r is not None]
    chunk = [w for w in writes if all(w is not r.nodes[-1] for r in rolls)]
    if len(chunk) != 1 or len(rolls) > 1:
        return "the cache buffers are not written exactly once in this graph (besides a roll)"
    roll = rolls[0] if rolls else None
    if roll is not None and any(len(n.users) != 1 for n in roll.nodes[:2]):
        return f"the roll of buffer {read.buf.name} is used by other nodes too"
    return chunk[0], roll


def _match(node: fx.Node):
    """The :class:`BufferMatch` of a cached attention, or a reason."""
    _, k_arg, v_arg = _qkv(node)
    k_read, v_read = _buffer_read(k_arg), _buffer_read(v_arg)
    if k_read is None or v_read is None:
        return "no KV cache: K/V are neither read from buffers the model keeps nor concatenated to past K/V passed in"
    if (k_read.token_axis != v_read.token_axis or not _same_slice(k_read.tokens, v_read.tokens)
            or k_read.buf is v_read.buf):
        return "K and V are read from different ranges or one buffer"
    found = _chunk_write_and_roll(k_read), _chunk_write_and_roll(v_read)
    reason = next((f for f in found if isinstance(f, str)), None)
    if reason is not None:
        return reason
    (k_write, k_roll), (v_write, v_roll) = found
    if (k_roll is None) != (v_roll is None) or (
            k_roll is not None and not all(map(_same_bound, k_roll.bounds, v_roll.bounds))):
        return "K and V are rolled differently"
    w_slice, w_slice_v = (_token_slice(w.args[1], k_read.token_axis) for w in (k_write, v_write))
    if w_slice is None or w_slice_v is None or not _same_slice(w_slice, w_slice_v):
        return "the K/V writes are not one token range of both buffers"
    if not _same_bound(w_slice.stop, k_read.tokens.stop):
        return "the attention does not read up to the end of the write"
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    for read, write, roll in ((k_read, k_write, k_roll), (v_read, v_write, v_roll)):
        roll_nodes = set(roll.nodes[::2]) if roll is not None else set()  # its slice and its write use the buffer
        if set(read.buf.users) != {write, read.nodes[-1], *roll_nodes} or any(len(n.users) != 1 for n in read.nodes):
            return f"the buffer {read.buf.name} is used by other nodes too"
        if not order[write] < order[read.nodes[-1]]:
            return "the attention reads the buffers before they are written"
        if roll is not None and not order[roll.nodes[-1]] < order[write]:
            return "the buffers are rolled after the chunk is written"
    return BufferMatch(k_read, v_read, k_write, v_write, w_slice, k_roll, v_roll)


def _rewrite(graph: fx.Graph, node: fx.Node, match: BufferMatch, ctx: CompileContext) -> AttentionSite:
    k_read, v_read, roll = match.k_read, match.v_read, match.k_roll
    q = _qkv(node)[0]
    k_buf, v_buf = k_read.buf, v_read.buf
    capacity = example_value(k_buf).shape[k_read.token_axis]
    roll_args = None if roll is None else roll.bounds
    with graph.inserting_before(node):
        new = graph.call_function(cached_attention, (
            k_buf, v_buf, q, match.k_write.args[2], match.v_write.args[2], match.tokens.start or 0,
            k_read.tokens.start or 0, capacity, ctx.config.kv_page_size),
            {"scale": node.kwargs.get("scale"), "token_axis": k_read.token_axis, "roll": roll_args})
    copy_meta_value(new, example_value(node))
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    rolls = [n for r in (match.k_roll, match.v_roll) if r is not None for n in reversed(r.nodes)]
    for dead in (*k_read.nodes, *v_read.nodes, match.k_write, match.v_write, *rolls):  # users before their inputs
        if not dead.users:
            graph.erase_node(dead)
    names = ctx.param_names
    layout = "[B, H, T, D]" if k_read.token_axis == SDPA_TOKEN_AXIS else "[B, T, H, D]"
    rolled = "" if roll is None else f"; rolled past a {_shown(roll.bounds[0])}-token sink"
    return AttentionSite(ctx.graph_id, node.name, True,
                         f"KV cache in paged NVFP4 ({ctx.config.kv_page_size}-token pages; {layout} buffers{rolled})",
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
        concat = _match_concat(node) if reason is None else None
        match = concat if concat is not None else (_match(node) if reason is None else reason)
        if isinstance(match, str):
            ctx.attention_sites.append(AttentionSite(ctx.graph_id, node.name, False, match))
            continue
        rewrite = _rewrite_concat if concat is not None else _rewrite
        ctx.attention_sites.append(rewrite(gm.graph, node, match, ctx))
        if concat is not None:
            converted.extend((match[0].past, match[1].past))
        else:
            converted.extend((match.k_read.buf, match.v_read.buf))
            ctx.paged_buffers.update(ctx.param_names.get(b.name, b.name) for b in converted[-2:])
        count += 1
    _refuse_dense_use_of_paged_buffers(gm, ctx)
    if count:
        _check(gm, converted)
        gm.recompile()
    return PassResult(gm, count > 0, count)


def _refuse_dense_use_of_paged_buffers(gm: fx.GraphModule, ctx: CompileContext) -> None:
    """A buffer that one of the model's graphs moved into NVFP4 pages is stale: another graph that
    still reads or writes it densely (an attention this pass could not convert there) would compute
    with stale K/V, silently. Raise instead, with the reasons."""
    for node in gm.graph.nodes:
        name = ctx.param_names.get(node.name) if node.op == "placeholder" else None
        dense = [u.name for u in node.users if u.target is not cached_attention] if name in ctx.paged_buffers else []
        if dense:
            reasons = sorted({a.reason for a in ctx.attention_sites if not a.converted})
            raise ValueError(
                f"nvfp4_kv_cache: {name} lives in NVFP4 pages since an earlier call, but this graph uses it "
                f"densely ({', '.join(dense)}); the attention could not be converted here: "
                f"{'; '.join(reasons) or 'no attention reads it'}")


def _check(gm: fx.GraphModule, buffers: list[fx.Node]) -> None:
    """The converted buffers (or pasts) are no longer read or written elsewhere; the graph is well formed."""
    for buf in buffers:
        left = [u.name for u in buf.users if u.target not in (cached_attention, concat_attention)]
        if left:
            raise AssertionError(f"nvfp4_kv_cache: buffer {buf.name} still used by {left}")
    gm.graph.lint()
