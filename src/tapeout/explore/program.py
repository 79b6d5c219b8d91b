"""A compiled program in a mix: what `tapeout compile --out PROGRAM.json` wrote, run on the designs.

The program's kernels and collective markers are its op graph (`compiler.program.Program.graph`);
on `chips` > 1 chips it runs tensor-parallel as `Program.sharded(chips)` splits it, its partial
sums and gathers costed over the design's links. One run takes the graph's time on the design,
as `tapeout compile` times it on its target (`perf.rules.graph_cost` on a system of `chips` under
the space's software), and its unit is a run: `per_s` is runs per second per chip. A design fits
the program when its memory holds the weights (split over the chips), the inputs and the
activation peak of the program's memory plan (the whole program's, a bound on one chip's under
tensor parallelism); `latency_limit_s` bounds one run.

A program is read without torch: a space costs programs compiled elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tapeout.api import system_for
from tapeout.compiler.program import Program
from tapeout.errors import TapeoutError
from tapeout.explore.mix import Context, Fields, Floats, Outcome
from tapeout.explore.silicon import Silicon
from tapeout.explore.vector import Designs, total
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.rules import graph_cost
from tapeout.units import GB
from tapeout.workloads.graph import Graph

OWN = ("program", "chips", "latency_limit_s")


@dataclass(eq=False, kw_only=True)
class Compiled:
    name: str
    weight: float
    program: Program
    path: str
    chips: int
    latency_limit_s: float | None
    software: str
    graph: Graph
    unit: str = "runs"
    metrics: tuple[str, ...] = ("per_s", "time_s")

    @property
    def needs_bytes(self) -> float:
        """Memory one chip needs: its share of the weights, the inputs and the activation peak."""
        m = self.program.memory
        return m.weight_bytes / self.chips + m.input_bytes + m.peak_activation_bytes

    def _why(self, chip: ChipSpec) -> str:
        """Why the program cannot run on `chip` ("" when it can)."""
        try:
            chip.require_formats({"precision": self.program.precision})
        except TapeoutError as exc:
            return f"{self.name}: {exc}"
        have = chip.memory.capacity_gb * GB
        if self.needs_bytes > have:
            return (f"{self.name}: {self.path} needs {self.needs_bytes / GB:,.2f} GB a chip, over the design's "
                    f"{have / GB:,.1f} GB")  # fmt: skip
        return ""

    def scalar(self, silicon: Silicon) -> Outcome:
        """The reference path: `graph_cost` of the graph on the design's system."""
        assert silicon.chip is not None
        system = system_for(silicon.chip, self.chips, self.software, "serving")[0]
        time = np.array([graph_cost(self.graph, system).time_s])
        return self._point(time, [self._why(silicon.chip)])

    def batch(self, silicons: Sequence[Silicon]) -> Outcome:
        """The fast path: every op of the graph costed on all designs at once."""
        chips = [s.chip for s in silicons if s.chip is not None]
        assert len(chips) == len(silicons)
        cal = system_for(chips[0], self.chips, self.software, "serving")[0].cal
        d = Designs(chips=chips, system_chips=self.chips, cal=cal, load="serving",
                    joules_of=lambda i, p: silicons[i].joules(p))  # fmt: skip
        time, _ = total([(n.op, n.count) for n in self.graph.nodes], d, {})
        return self._point(time, [self._why(c) for c in chips])

    def _point(self, time: Floats, why: list[str]) -> Outcome:
        limit = self.latency_limit_s
        reasons = [
            w or (f"{self.name}: one run takes {t:.3g} s, over the limit of {limit:g} s"
                  if limit is not None and t > limit else "")
            for w, t in zip(why, time, strict=True)
        ]  # fmt: skip
        feasible = np.array([not r for r in reasons], dtype=bool)
        metrics = {"per_s": np.where(feasible, 1.0 / (time * self.chips), np.nan),
                   "time_s": np.where(feasible, time, np.nan)}  # fmt: skip
        return Outcome(metrics=metrics, feasible=feasible, reasons=reasons)


def lower(f: Fields, name: str, weight: float, context: Context) -> Compiled:
    path = Path(f.text("program"))
    full = path if path.is_absolute() else Path(context.folder) / path
    if not full.is_file():
        raise TapeoutError(f"{f.where}: field 'program': no program file {str(path)!r} beside the space file")
    program = Program.load(full)
    chips = f.count("chips", "chips (tensor-parallel)", default=1, high=1024)
    limit = f.number("latency_limit_s", "s") if "latency_limit_s" in f.raw else None
    try:
        graph = program.sharded(chips) if chips > 1 else program.graph()
    except TapeoutError as exc:
        raise TapeoutError(f"{f.where}: field 'chips': {exc}") from None
    return Compiled(name=name, weight=weight, program=program, path=str(path), chips=chips,
                    latency_limit_s=limit, software=context.software, graph=graph)  # fmt: skip
