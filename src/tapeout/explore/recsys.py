"""Recommendation inference in a mix: a DLRM-class model ranking requests under a p99 limit.

A ranking request scores `pairs_per_sample` user-item pairs. Each chip batches the requests that
queued, up to a batch of `B` requests; a request that arrives just after a batch starts waits for
it and then rides the next, so the operating point takes the latency as two batch times and keeps
the largest `B` of 1, 2, 4, ... `max_batch` whose two batch times meet the limit (a sustained
operating point, not the simulated p99 of `tapeout recsys --latency-limit`). Its throughput is
`B` requests per batch time per chip.

The batch time is `sim.recsys.RecsysSystem.batch_time` on the design (`scalar`), or the same
batch from the vectorised rules (`batch`): the chip's share of the lookups (the hot rows its
shared SRAM caches served on chip) and of the dense part, power-capped, then the all-to-all. The
tables' placement and the hot rows follow the design's memory capacity and shared SRAM: designs
are costed in groups of equal ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tapeout.api import system_for
from tapeout.errors import TapeoutError
from tapeout.explore.mix import Context, Fields, Floats, Outcome, best_index, ladder
from tapeout.explore.silicon import Silicon
from tapeout.explore.vector import Designs, total
from tapeout.hardware.spec import ChipSpec
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.shard import Layout
from tapeout.perf.system import System
from tapeout.sim.recsys import RecsysSystem, _template
from tapeout.workloads.models import resolve_model
from tapeout.workloads.ops import Op
from tapeout.workloads.recsys import RecsysConfig

Ops = list[tuple[Op, float]]
OWN = ("model", "chips", "plan", "pairs_per_sample", "p99_limit_s", "max_batch")


@dataclass(eq=False, kw_only=True)
class Recsys:
    name: str
    weight: float
    model: RecsysConfig
    chips: int
    plan: RecsysPlan
    pairs_per_sample: float
    p99_limit_s: float
    software: str
    batches: tuple[int, ...]
    unit: str = "samples"
    metrics: tuple[str, ...] = ("per_s", "batch", "p99_s")
    _systems: dict[tuple[float, float], RecsysSystem | str] = field(default_factory=dict)
    _lowered: dict[tuple[Layout, int], tuple[Ops, Ops]] = field(default_factory=dict)
    _fits: dict[int, int] = field(default_factory=dict)

    def _system(self, chip: ChipSpec) -> System:
        return system_for(chip, self.chips, self.software, "recsys")[0]

    def _placed(self, chip: ChipSpec) -> RecsysSystem | str:
        """The model placed on this design's memory and SRAM (the reason when it cannot be), one
        per capacity and shared SRAM."""
        key = (chip.memory.capacity_gb, chip.sram_shared_bytes)
        if key not in self._systems:
            try:
                self._systems[key] = RecsysSystem.of(self.model, self._system(chip), self.plan)
            except TapeoutError as exc:
                self._systems[key] = f"{self.name}: {exc}"
        return self._systems[key]

    def _pairs(self) -> list[int]:
        return [max(1, round(b * self.pairs_per_sample)) for b in self.batches]

    def scalar(self, silicon: Silicon) -> Outcome:
        """The reference path: `RecsysSystem.batch_time` on the design's real system."""
        assert silicon.chip is not None
        placed = self._placed(silicon.chip)
        times = np.full(len(self.batches), np.inf)
        if isinstance(placed, RecsysSystem):
            rs = RecsysSystem.of(self.model, self._system(silicon.chip), self.plan)
            for i, pairs in enumerate(self._pairs()):
                try:
                    times[i] = rs.batch_time(pairs)
                except TapeoutError:  # the batch's activations do not fit beside the tables
                    break
        return self._point(times[None, :], [placed if isinstance(placed, str) else ""])

    def batch(self, silicons: Sequence[Silicon]) -> Outcome:
        """The fast path: all designs costed at once, each op once. Designs whose tables are
        placed alike (the same share of every table and the same hot rows) run the same ops;
        each placement then keeps the batches whose activations fit beside its tables."""
        chips = [s.chip for s in silicons if s.chip is not None]
        assert len(chips) == len(silicons)
        placed = [self._placed(c) for c in chips]
        groups: dict[Layout, list[int]] = {}
        for i, rs in enumerate(placed):
            if isinstance(rs, RecsysSystem):
                groups.setdefault(rs.placement.layout(0, rs.hits), []).append(i)
        times = np.full((len(chips), len(self.batches)), np.inf)
        if groups:
            first = placed[next(iter(groups.values()))[0]]
            assert isinstance(first, RecsysSystem)
            d = Designs(chips=chips, system_chips=self.chips, cal=first.system.cal, load=first.system.load,
                        joules_of=lambda i, p: silicons[i].joules(p))  # fmt: skip
            seen: dict[Op, tuple[Floats, Floats]] = {}
            for layout, rows in groups.items():
                times[rows] = self._group(first, layout, d, seen, rows)
        for i, rs in enumerate(placed):
            if isinstance(rs, RecsysSystem):
                times[i, self._fitting(rs) :] = np.inf
        return self._point(times, [p if isinstance(p, str) else "" for p in placed])

    def _fitting(self, rs: RecsysSystem) -> int:
        """How many of the batch sizes fit beside the tables (`RecsysSystem.check_batch`), once per
        placement (`rs` is kept by `_placed`, so its id names it)."""
        got = self._fits.get(id(rs))
        if got is None:
            got = len(self.batches)
            for j, pairs in enumerate(self._pairs()):
                try:
                    rs.check_batch(pairs)
                except TapeoutError:
                    got = j
                    break
            self._fits[id(rs)] = got
        return got

    def _group(self, rs: RecsysSystem, layout: Layout, d: Designs, seen: dict[Op, tuple[Floats, Floats]],
               rows: list[int]) -> Floats:  # fmt: skip
        """Batch times at each batch size of the designs `rows` of `d`, whose tables lie as `layout`."""
        out = np.empty((len(rows), len(self.batches)))
        for j, pairs in enumerate(self._pairs()):
            compute, comm = self._ops(rs, layout, pairs)
            t, e = total(compute, d, seen)
            out[:, j] = d.capped(t[rows], e[rows], rows) + total(comm, d, seen)[0][rows]
        return out

    def _ops(self, rs: RecsysSystem, layout: Layout, pairs: int) -> tuple[Ops, Ops]:
        """One chip's ops of a batch of `pairs` (`sim.recsys._template`), kept per placement."""
        key = (layout, pairs)
        if key not in self._lowered:
            compute, comm = _template(self.model, layout, rs.dense_precision, rs.embedding_precision, False)
            sizes = {"pairs": pairs}
            self._lowered[key] = ([(n.op_at(sizes), n.count) for n in compute.nodes],
                                  [(n.op_at(sizes), n.count) for n in comm.nodes])  # fmt: skip
        return self._lowered[key]

    def _point(self, times: Floats, why: list[str]) -> Outcome:
        """The operating point (module docstring) from the batch times at each batch size."""
        b = np.array(self.batches, dtype=np.float64)[None, :]
        ok = 2 * times <= self.p99_limit_s
        i, rows = best_index(ok), np.arange(len(times))
        feasible: npt.NDArray[np.bool_] = np.asarray(ok.any(axis=1), dtype=bool)
        t, batch = times[rows, i], b[0, i]
        reasons = [
            why[r] or ("" if feasible[r] else
                       f"{self.name}: one request of {self.pairs_per_sample:g} pairs takes {times[r, 0]:.3g} s a "
                       f"batch, over half the p99 limit of {self.p99_limit_s:g} s")
            for r in range(len(times))
        ]  # fmt: skip
        metrics = {
            "per_s": np.where(feasible, batch / t, np.nan), "batch": np.where(feasible, batch, np.nan),
            "p99_s": np.where(feasible, 2 * t, np.nan),
        }  # fmt: skip
        return Outcome(metrics=metrics, feasible=feasible, reasons=reasons)


def lower(f: Fields, name: str, weight: float, context: Context) -> Recsys:
    model = resolve_model(f.model(), f.where, name)
    if not isinstance(model, RecsysConfig):
        raise TapeoutError(
            f"{f.where}: field 'model': recsys needs a recommendation model, not a language model"
        )
    return Recsys(
        name=name, weight=weight, model=model, chips=f.count("chips", "chips", default=1, high=1_000_000),
        plan=f.plan(RecsysPlan), pairs_per_sample=f.number("pairs_per_sample", "pairs", default=1.0, high=1e6),
        p99_limit_s=f.number("p99_limit_s", "s"), software=context.software,
        batches=ladder(f.count("max_batch", "requests", default=1024, high=1 << 20)),
    )  # fmt: skip
