"""The compile report: each GEMM (quantized or not, and why), its fused epilogue, weight bytes,
and every point where data leaves the NVFP4 envelope. Printable with rich; ``to_dict`` for JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

from .passes.base import AttentionSite, Boundary, GemmSite


@dataclass
class Report:
    """What ``nvfp4.compile`` did to a model, over every graph it captured so far.

    ``eager_linears`` ran in NVFP4 outside any captured graph (after a graph break Dynamo could not
    resume from); ``uncaptured_linears`` ran in bf16 outside any graph (excluded or ineligible).
    ``gemms`` and ``boundaries`` hold the latest compilation of each GEMM (recompiling for a new
    input shape replaces the earlier entries instead of adding to them).
    """

    gemms: list[GemmSite]
    boundaries: list[Boundary]
    graphs: int
    compilations: int
    uncaptured_linears: list[str] = field(default_factory=list)
    eager_linears: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    attention: list[AttentionSite] = field(default_factory=list)  # what nvfp4_kv_cache did to each call
    inductor: list[str] = field(default_factory=list)  # per compilation: did Inductor fuse the other ops

    @property
    def quantized(self) -> list[GemmSite]:
        return [g for g in self.gemms if g.quantized]

    @property
    def inductor_graphs(self) -> int:
        """Compilations whose other ops Inductor compiled."""
        return sum(note.startswith("on") for note in self.inductor)

    @property
    def kept(self) -> list[GemmSite]:
        return [g for g in self.gemms if not g.quantized]

    def weight_bytes(self) -> tuple[int, int]:
        """(before, after) bytes of all GEMM weights seen."""
        return sum(g.weight_bytes_before for g in self.gemms), sum(g.weight_bytes_after for g in self.gemms)

    def to_dict(self) -> dict:
        before, after = self.weight_bytes()
        return {
            "summary": {
                "gemms": len(self.gemms),
                "quantized": len(self.quantized),
                "kept_bf16": len(self.kept),
                "uncaptured_linears": len(self.uncaptured_linears),
                "eager_nvfp4_linears": len(self.eager_linears),
                "graphs": self.graphs,
                "compilations": self.compilations,
                "weight_bytes_before": before,
                "weight_bytes_after": after,
                "boundary_bytes": sum(b.nbytes for b in self.boundaries),
                "attention_calls": len(self.attention),
                "attention_kv_converted": sum(a.converted for a in self.attention),
                "inductor_graphs": self.inductor_graphs,
            },
            "gemms": [{**asdict(g), "dtype": str(g.dtype)} for g in self.gemms],
            "boundaries": [asdict(b) for b in self.boundaries],
            "uncaptured_linears": list(self.uncaptured_linears),
            "eager_linears": list(self.eager_linears),
            "attention": [asdict(a) for a in self.attention],
            "inductor": list(self.inductor),
            "config": self.config,
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        summary = self.to_dict()["summary"]
        yield (
            f"[bold]NVFP4 report[/bold]: {summary['quantized']}/{summary['gemms']} GEMMs in NVFP4, "
            f"{summary['kept_bf16']} kept in bf16, {summary['graphs']} graph(s), "
            f"{summary['compilations']} compilation(s); weights {_mib(summary['weight_bytes_before'])} -> "
            f"{_mib(summary['weight_bytes_after'])}"
        )
        gemms = Table(title="GEMMs", show_lines=False)
        for col in ["module", "M x K x N", "NVFP4", "epilogue / reason", "input scale", "backend", "weight bytes"]:
            gemms.add_column(col)
        for g in self.gemms:
            status = "[green]yes[/green]" if g.quantized else "[yellow]bf16[/yellow]"
            detail = ", ".join(g.epilogue) if g.quantized else g.reason
            gemms.add_row(g.name, f"{g.m} x {g.k} x {g.n}", status, detail or "-", g.input_scale or "-",
                          g.backend or "-", f"{_mib(g.weight_bytes_before)} -> {_mib(g.weight_bytes_after)}")
        yield gemms
        if self.inductor:
            notes = sorted(set(self.inductor), key=self.inductor.index)
            yield (f"Other ops (norms, attention, ...): Inductor-compiled in {self.inductor_graphs} of "
                   f"{len(self.inductor)} compilation(s)" + "".join(f"; {n}" for n in notes if n != "on"))
        bounds = Table(title="Envelope boundaries (NVFP4 GEMM outputs read outside the envelope)")
        for col in ["producer", "read by", "bytes", "dtype"]:
            bounds.add_column(col)
        for b in self.boundaries:
            bounds.add_row(b.producer, ", ".join(b.consumers), f"{b.nbytes:,}", b.dtype)
        yield bounds
        if self.attention:
            attn = Table(title="Attention (nvfp4_kv_cache)")
            for col in ["graph", "node", "KV cache in NVFP4", "cache buffers / reason"]:
                attn.add_column(col)
            for a in self.attention:
                status = "[green]yes[/green]" if a.converted else "no"
                size = f"{a.tokens} tokens" if a.tokens else "grows as needed"
                detail = f"{a.k_buffer}, {a.v_buffer} ({size}): {a.reason}" if a.converted else a.reason
                attn.add_row(str(a.graph_id), a.node, status, detail)
            yield attn
        if self.eager_linears:
            yield (f"[yellow]Linears run in NVFP4 outside captured graphs (eager fallback after a graph "
                   f"break; no epilogue fusion):[/yellow] {', '.join(self.eager_linears)}")
        if self.uncaptured_linears:
            yield f"[red]Linears never captured in a graph (ran eagerly in bf16):[/red] {', '.join(self.uncaptured_linears)}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def latest_per_name(items, key):
    """Keep the last item for each key (a recompiled graph replaces its earlier entries)."""
    latest = {}
    for item in items:
        latest[key(item)] = item
    return list(latest.values())
