"""Running a rewritten graph: bind its NVFP4 weight slots to the parameters actually passed.

Dynamo reuses one compiled graph for every call of the same code with matching guards, e.g. the
``forward`` of each of 30 identical blocks once a graph break makes blocks separate frames; the
parameters arrive as graph inputs. A graph's pre-quantized weights therefore live in *slots*
(get_attr buffers) that this runner points, on every call, at the NVFP4 copy of the parameter
passed in that position, taken from a cache shared by all graphs (each parameter quantized once,
again only when it changes in place).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch
import torch.fx as fx

from .calibration import check_calibrated, run_observing
from .format import NVFP4Tensor, quantize
from .passes.base import CompileContext, GemmSite


class WeightCache:
    """NVFP4 copies of parameters, keyed by the parameter object and its version counter;
    ``four_over_six`` chooses their block scales by Four Over Six (``Config.four_over_six``)."""

    def __init__(self, four_over_six: bool = False):
        self._entries: dict[int, tuple[weakref.ref, int, NVFP4Tensor]] = {}
        self.four_over_six = four_over_six

    def get(self, weight: torch.Tensor) -> NVFP4Tensor:
        entry = self._entries.get(id(weight))
        if entry is not None:
            ref, version, q = entry
            if ref() is weight and version == weight._version:
                return q
        q = quantize(weight.detach(), block=(1, 16), four_over_six=self.four_over_six)
        self.put(weight, q)
        return q

    def put(self, weight: torch.Tensor, q: NVFP4Tensor) -> None:
        """Use ``q`` as the NVFP4 copy of ``weight`` (until ``weight`` changes in place), e.g. the
        tensors of a loaded checkpoint, so they are used as stored instead of re-quantized."""
        self._entries[id(weight)] = (weakref.ref(weight), weight._version, q)


@dataclass
class WeightSlot:
    arg_index: int       # position of the weight among the graph's inputs
    prefix: str          # buffers f"{prefix}_data", f"{prefix}_scale", f"{prefix}_global_scale"
    site: GemmSite


class GraphRunner:
    """The callable returned to Dynamo for one rewritten graph."""

    def __init__(self, gm: fx.GraphModule, ctx: CompileContext, slots: list[WeightSlot], cache: WeightCache,
                 param_names: dict[int, str], backend):
        self.gm, self.ctx, self.slots, self.cache = gm, ctx, slots, cache
        self.param_names, self.backend = param_names, backend
        self.seen_weight_sets: set[tuple[int, ...]] = set()
        self.scales_checked = False  # static activation scales found calibrated (check_calibrated)
        # Set when Inductor compiled the graph (inductor.compile_graph); called with ``gm``, it
        # reads the slots' current weights from it.
        self.compiled = None

    def __call__(self, *args):
        ids = tuple(id(args[s.arg_index]) for s in self.slots)
        self.bind_slots(args)
        if ids not in self.seen_weight_sets:
            self.seen_weight_sets.add(ids)
            self._record_reuse(args)
        if self.backend.calibrating:
            self.scales_checked = False
            return run_observing(self.gm, args)
        if not self.scales_checked:  # once, not per call: the check reads the buffers back to the host
            check_calibrated(self.gm)
            self.scales_checked = True
        if self.compiled is not None:
            return self.compiled(self.gm, args)
        return self.gm.forward(*args)

    def bind_slots(self, args) -> None:
        """Point every weight slot at the NVFP4 copy of the parameter passed in its position."""
        for slot in self.slots:
            q = self.cache.get(args[slot.arg_index])
            setattr(self.gm, f"{slot.prefix}_data", q.data)
            setattr(self.gm, f"{slot.prefix}_scale", q.scale)
            setattr(self.gm, f"{slot.prefix}_global_scale", q.global_scale)

    def _record_reuse(self, args) -> None:
        """The graph now runs with other modules' weights: report those modules' GEMMs too."""
        renamed = []
        for slot in self.slots:
            name = self.param_names.get(id(args[slot.arg_index]))
            module = name.rsplit(".", 1)[0] if name else slot.site.name
            if module != slot.site.name:
                renamed.append((slot.site, module))
        if not renamed:
            return
        for site, module in renamed:
            alias = copy.copy(site)
            alias.name = module
            alias.epilogue = list(site.epilogue)
            self.ctx.sites.append(alias)
        names = {site.name: module for site, module in renamed}
        for boundary in list(self.ctx.boundaries):
            if boundary.producer in names:
                alias = copy.copy(boundary)
                alias.producer = names[boundary.producer]
                self.ctx.boundaries.append(alias)
