"""A self-contained HTML page of a compiled model: the rewritten graphs drawn, and the report.

Each NVFP4 GEMM is drawn as one node that stands for its fused kernel (the quantize feeding it and
the epilogue folded into it are listed on the node); nodes are coloured by envelope membership:
NVFP4 (inside), boundary (reads a GEMM's bf16 output), bf16 (outside). Layout: networkx, layered
by topological generation. No scripts or external files: it opens in any browser.
"""

from __future__ import annotations

import html
import operator

import networkx as nx
import torch.fx as fx

from . import ops
from .api import NVFP4Module, report

COLOURS = {"nvfp4": "#2e9d5b", "boundary": "#e3912b", "bf16": "#9aa3ad", "input": "#4a78c2"}
LEGEND = {"nvfp4": "NVFP4 (fused GEMM kernel / quantize)", "boundary": "reads a GEMM output in bf16 (envelope boundary)",
          "bf16": "bf16 / fp32 op", "input": "graph input"}


def _label(node: fx.Node, sites) -> str:
    if node.target in ops.GEMMS:
        site = sites.get(node.name)
        return f"GEMM {site.name} [{', '.join(site.epilogue)}]" if site else "GEMM"
    if node.target is ops.QUANTIZE:
        return "quantize"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{target}"


def graph_of(gm: fx.GraphModule, sites, params=frozenset()) -> nx.DiGraph:
    """The graph to draw: FX nodes minus getitem/get_attr/output and parameter inputs, edges
    through getitems."""
    g = nx.DiGraph()
    gemm_outputs = set()
    for node in gm.graph.nodes:
        if node.op in ("get_attr", "output") or node.target is operator.getitem:
            continue
        if node.op == "placeholder" and (not node.users or node.name in params):
            continue
        kind = "input" if node.op == "placeholder" else (
            "nvfp4" if node.target in (*ops.GEMMS, ops.QUANTIZE) else "bf16")
        g.add_node(node.name, label=_label(node, sites), kind=kind)
        if node.target is ops.GEMM:
            gemm_outputs.update(u for u in node.users if u.args[1] == 0)
    for node in gm.graph.nodes:
        if node.name not in g:
            continue
        for source in node.all_input_nodes:
            origin = source.args[0] if source.target is operator.getitem else source
            if origin.name in g:
                g.add_edge(origin.name, node.name)
            if source in gemm_outputs and g.nodes[node.name]["kind"] == "bf16":
                g.nodes[node.name]["kind"] = "boundary"
    return g


def _svg(g: nx.DiGraph, width: int = 1400) -> str:
    for layer, names in enumerate(nx.topological_generations(g)):
        for name in names:
            g.nodes[name]["layer"] = layer
    layers = 1 + max((d["layer"] for _, d in g.nodes(data=True)), default=0)
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal", scale=1.0)
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    height = max(400, 30 * layers)
    sx = lambda x: 40 + (x - min(xs)) / ((max(xs) - min(xs)) or 1) * (width - 80)  # noqa: E731
    sy = lambda y: 30 + (y - min(ys)) / ((max(ys) - min(ys)) or 1) * (height - 60)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for a, b in g.edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        parts.append(f'<line x1="{sx(x1):.1f}" y1="{sy(y1):.1f}" x2="{sx(x2):.1f}" y2="{sy(y2):.1f}" class="e"/>')
    label_slot: dict[int, int] = {}
    for name, data in g.nodes(data=True):
        x, y = pos[name]
        r = 9 if data["label"].startswith("GEMM") else 5
        label = html.escape(data["label"])
        parts.append(f'<g><title>{html.escape(name)}: {label}</title>'
                     f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" fill="{COLOURS[data["kind"]]}"/>')
        if data["label"].startswith("GEMM"):  # stagger labels of GEMMs that share a layer
            slot = label_slot.get(data["layer"], 0)
            label_slot[data["layer"]] = slot + 1
            parts.append(f'<text x="{sx(x) + 12:.1f}" y="{sy(y) + 4 + 12 * slot:.1f}">{label}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def render(compiled: NVFP4Module, title: str) -> str:
    """The page, as a string."""
    rep = report(compiled)
    summary = rep.to_dict()["summary"]
    sections = []
    for captured in compiled.backend.graphs:
        sites = captured.context.site_of_node
        g = graph_of(captured.graph_module, sites, frozenset(captured.context.param_names))
        if g.number_of_nodes():
            counts = {k: sum(1 for _, d in g.nodes(data=True) if d["kind"] == k) for k in COLOURS}
            sections.append(f"<h2>Graph {captured.context.graph_id}: {g.number_of_nodes()} ops "
                            f"({counts['nvfp4']} NVFP4, {counts['boundary']} at the boundary, {counts['bf16']} bf16)</h2>"
                            + _svg(g))
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{s.m}x{s.k}x{s.n}</td><td>{'NVFP4' if s.quantized else 'bf16'}</td>"
        f"<td>{html.escape(', '.join(s.epilogue) if s.quantized else s.reason)}</td><td>{html.escape(s.backend)}</td></tr>"
        for s in rep.gemms)
    legend = "".join(f'<span><i style="background:{COLOURS[k]}"></i>{html.escape(v)}</span>' for k, v in LEGEND.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #1d2330; }}
.legend span {{ margin-right: 18px; }} .legend i {{ display: inline-block; width: 12px; height: 12px;
border-radius: 6px; margin-right: 6px; vertical-align: middle; }}
svg {{ border: 1px solid #dde2e8; background: #fbfcfd; }} svg text {{ font-size: 11px; fill: #1d2330; }}
line.e {{ stroke: #c3cad3; stroke-width: 1; }} table {{ border-collapse: collapse; margin-top: 16px; }}
td, th {{ border: 1px solid #dde2e8; padding: 3px 8px; text-align: left; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary['quantized']}/{summary['gemms']} GEMMs in NVFP4, {summary['kept_bf16']} kept in bf16;
weights {summary['weight_bytes_before']:,} &rarr; {summary['weight_bytes_after']:,} bytes;
{summary['boundary_bytes']:,} bytes cross the envelope boundary per forward.</p>
<div class="legend">{legend}</div>
{''.join(sections)}
<h2>GEMMs</h2><table><tr><th>module</th><th>M x K x N</th><th>format</th><th>fused epilogue / reason</th><th>backend</th></tr>{rows}</table>
</body></html>
"""
