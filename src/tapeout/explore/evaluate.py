"""Evaluating designs of a space on its mix: knobs in, metrics and feasibility out.

`Evaluator.evaluate` is the reference: one design, its silicon from `tapeout.cost`, each workload
on the design's real `System` through the simulators. `Evaluator.evaluate_batch` is the fast path
the searches use: the silicon of each design (cached by its knobs), then every workload's
vectorised cost over all the designs that passed their constraints and checks. The two agree to
rounding (`tests/test_explore.py`).

The mix's units: each entry counts its own (requests, samples, sequences) and its `weight` is
how many of them one unit of the mix holds (weights are taken relative to their sum). A chip
that time-shares the mix spends `sum(w_i / r_i)` seconds on one unit, where `r_i` is entry i's
units per second per chip; the mix's `throughput` is the inverse. `perf_per_tco` divides it by the
chip's TCO per second (`cost.tco.chip_tco`, the chip bought at its unit cost), `usd_per_million`
is TCO per million units (`cost.tco.usd_per_unit`, from the silicon's `tco_usd_per_hour`), `perf_per_watt` divides by the power budget,
`perf_per_mm2` by the die area.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapeout.cost.tco import hourly_usd_per_unit
from tapeout.explore.columns import silicon_batch
from tapeout.explore.knobs import Value
from tapeout.explore.mix import Outcome, Workload
from tapeout.explore.silicon import SILICON_METRICS, Silicon, silicon
from tapeout.explore.space import MIX_METRICS, Space
from tapeout.hardware.design import Design

SILICON_CACHE = 200_000  # designs whose silicon a worker keeps (about 2 KB each)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One evaluated design: its knobs, its metrics (silicon, per workload as `name.metric`, and
    the mix's), whether it meets everything, why not, and how far outside the constraints it is."""

    knobs: Mapping[str, Value]
    metrics: Mapping[str, float]
    feasible: bool
    reason: str = ""
    violation: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        finite = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return {
            "knobs": dict(self.knobs),
            "metrics": finite,
            "feasible": self.feasible,
            "reason": self.reason,
        }


class Evaluator:
    """A space's workloads lowered once, and the silicon of the designs seen so far.

    >>> from tapeout.explore.space import load_space
    >>> ev = Evaluator(load_space("examples/explore-small.yaml"))
    >>> r = ev.evaluate({"num_cores": 48, "clock_ghz": 1.4, "memory.interfaces": 6, "sram.global.capacity_mib": 192.0})
    >>> r.feasible, r.metrics["die_area_mm2"] < 858
    (True, True)
    """

    def __init__(self, space: Space) -> None:
        self.space = space
        self.workloads: list[Workload] = space.lower()
        total = sum(w.weight for w in self.workloads)
        self.shares = [w.weight / total for w in self.workloads]
        self._silicon: dict[tuple[Value, ...], Silicon] = {}
        self._design = None if space.catalog else Design.model_validate(dict(space.base))
        per_workload = [f"{w.name}.{m}" for w in self.workloads for m in w.metrics]
        self.metric_names: tuple[str, ...] = (*SILICON_METRICS, *per_workload, *MIX_METRICS)

    def _result(self, knobs: Mapping[str, Value], metrics: Mapping[str, float], **rest: Any) -> Result:
        """A result with every metric of the space (NaN for those not reached)."""
        full = {n: float(metrics.get(n, math.nan)) for n in self.metric_names}
        return Result(knobs=knobs, metrics=full, **rest)

    def silicon(self, knobs: Mapping[str, Value]) -> Silicon:
        key = tuple(knobs[n] for n in self.space.names)
        got = self._silicon.get(key)
        if got is None:
            s = self.space
            got = silicon(
                s.base, knobs, origin=s.origin, volume=s.volume, tco=s.tco, bounds=s.bounds, catalog=s.catalog
            )
            if len(self._silicon) >= SILICON_CACHE:
                self._silicon.clear()
            self._silicon[key] = got
        return got

    def evaluate(self, knobs: Mapping[str, Value]) -> Result:
        """One design through the reference path (the simulators on its real system)."""
        sil = self.silicon(knobs)
        if not sil.ok:
            return self._result(
                knobs, sil.metrics, feasible=False, reason=sil.reason, violation=sil.violation
            )
        return self._combine([knobs], [sil], [w.scalar(sil) for w in self.workloads])[0]

    def silicons(self, points: Sequence[Mapping[str, Value]]) -> list[Silicon]:
        """The silicon of many designs: those seen before from the cache, the others together
        (`explore.columns`) when the base is a design file, else one by one."""
        if self._design is None:
            return [self.silicon(p) for p in points]
        keys = [tuple(p[n] for n in self.space.names) for p in points]
        known = {k: self._silicon[k] for k in keys if k in self._silicon}
        new = {k: p for k, p in zip(keys, points, strict=True) if k not in known}
        if new:
            s = self.space
            got = silicon_batch(s.base, self._design, list(new.values()), origin=s.origin, volume=s.volume,
                                tco=s.tco, bounds=s.bounds)  # fmt: skip
            known.update(zip(new, got, strict=True))
            if len(self._silicon) + len(new) > SILICON_CACHE:
                self._silicon.clear()
            self._silicon.update(zip(new, got, strict=True))
        return [known[k] for k in keys]

    def evaluate_batch(self, points: Sequence[Mapping[str, Value]]) -> list[Result]:
        """Many designs through the fast path, in order."""
        sils = self.silicons(points)
        ok = [i for i, s in enumerate(sils) if s.ok]
        out: list[Result] = [
            self._result(p, s.metrics, feasible=False, reason=s.reason, violation=s.violation)
            for p, s in zip(points, sils, strict=True)
        ]
        if ok:
            chosen = [sils[i] for i in ok]
            outcomes = [w.batch(chosen) for w in self.workloads]
            for i, r in zip(ok, self._combine([points[i] for i in ok], chosen, outcomes), strict=True):
                out[i] = r
        return out

    def _combine(self, points: Sequence[Mapping[str, Value]], sils: Sequence[Silicon], outcomes: list[Outcome]
                 ) -> list[Result]:  # fmt: skip
        """Each design's metrics: its silicon's, each workload's, and the mix's objectives."""
        with np.errstate(divide="ignore", invalid="ignore"):
            seconds = np.sum(
                [share / o.metrics["per_s"] for share, o in zip(self.shares, outcomes, strict=True)], axis=0
            )
        feasible = np.logical_and.reduce([o.feasible for o in outcomes])
        results = []
        for i, (p, s) in enumerate(zip(points, sils, strict=True)):
            metrics = dict(s.metrics)
            for w, o in zip(self.workloads, outcomes, strict=True):
                metrics.update({f"{w.name}.{k}": float(v[i]) for k, v in o.metrics.items()})
            reason = next((o.reasons[i] for o in outcomes if o.reasons[i]), "")
            ok = bool(feasible[i] and math.isfinite(seconds[i]) and seconds[i] > 0)
            metrics.update(_mix(float(1.0 / seconds[i]) if ok else math.nan, metrics))
            results.append(self._result(p, metrics, feasible=ok, reason=reason, violation=0.0 if ok else 1.0))
        return results


def _mix(throughput: float, m: Mapping[str, float]) -> dict[str, float]:
    """The mix's objectives from its throughput (mix units per second per chip)."""
    if not math.isfinite(throughput):
        return dict.fromkeys(("throughput", "perf_per_tco", "perf_per_watt", "perf_per_mm2", "usd_per_million"),
                             math.nan)  # fmt: skip
    hourly = m["tco_usd_per_hour"]  # `cost.tco.chip_tco` of the unit cost and power budget
    return {
        "throughput": throughput,
        "perf_per_tco": throughput * 3600 / hourly,
        "perf_per_watt": throughput / m["tdp_w"],
        "perf_per_mm2": throughput / m["die_area_mm2"],
        "usd_per_million": hourly_usd_per_unit(hourly, throughput, per=1e6),
    }
