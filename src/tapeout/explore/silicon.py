"""One design's silicon: its chip, die area, unit cost, power and TCO, and whether it passes the
space's constraints and the physical checks, all from `tapeout.cost` and `hardware.design`.

These are what a design is before any workload runs on it, so they are checked first: a design
that fails a constraint or a physical check (reticle, HBM shoreline, power budget) is never
costed on the workloads. They depend on the knobs alone and are cached by them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tapeout.cost.tco import TcoAssumptions, chip_tco
from tapeout.cost.unit import check_design, unit_cost
from tapeout.errors import TapeoutError
from tapeout.explore.knobs import Value, apply
from tapeout.explore.variant import apply_catalog
from tapeout.hardware.catalog import chip_from_mapping
from tapeout.hardware.design import expand_design
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.energy import PJ, flop_pj

# What a constraint may bound, with its unit: the silicon metrics below.
SILICON_METRICS: dict[str, str] = {
    "die_area_mm2": "mm^2",
    "unit_cost_usd": "US dollars (NRE over the volume included)",
    "power_w": "W (modelled, full load at nominal clock)",
    "tdp_w": "W (the power budget)",
    "memory_gb": "GB",
    "memory_bandwidth_gb_s": "GB/s",
    "bf16_tflops": "TFLOP/s",
    "sustained_clock": "(fraction of the clock a full matrix load sustains)",
    "tco_usd_per_hour": "US dollars per chip-hour",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """A constraint on one silicon metric: `low <= metric <= high`."""

    metric: str
    low: float | None = None
    high: float | None = None

    def violation(self, value: float) -> float:
        """How far `value` is outside the bound, relative to the bound (0 inside)."""
        if self.low is not None and value < self.low:
            return (self.low - value) / max(abs(self.low), 1e-12)
        if self.high is not None and value > self.high:
            return (value - self.high) / max(abs(self.high), 1e-12)
        return 0.0

    def __str__(self) -> str:
        unit = SILICON_METRICS[self.metric].split(" (")[0]
        parts = [
            f">= {self.low:g}" if self.low is not None else "",
            f"<= {self.high:g}" if self.high is not None else "",
        ]
        return f"{self.metric} {' and '.join(p for p in parts if p)} {unit}".rstrip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Silicon:
    """A design before any workload: its chip (None when the design is not a valid chip, and for a
    design costed in a batch that fails a constraint or check: no workload reads it), its metrics,
    and why it fails (empty when it passes every constraint and check)."""

    chip: ChipSpec | None
    metrics: Mapping[str, float]
    reason: str = ""
    violation: float = 0.0  # summed relative distance outside the space's constraints
    joules_of: Callable[[str], float] | None = None  # of a design costed in a batch (`explore.columns`)
    _joules: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reason

    def joules(self, precision: str) -> float:
        """Joules of one matrix FLOP at `precision` (`perf.energy.flop_pj`), memoised."""
        got = self._joules.get(precision)
        if got is None:
            if self.joules_of is not None:
                got = self._joules[precision] = self.joules_of(precision)
            else:
                assert self.chip is not None
                got = self._joules[precision] = flop_pj(self.chip, precision) * PJ
        return got


def silicon(
    base: Mapping[str, object],
    knobs: Mapping[str, Value],
    *,
    origin: str,
    volume: int,
    tco: TcoAssumptions,
    bounds: tuple[Bound, ...],
    catalog: bool = False,
) -> Silicon:
    """The silicon of the design `base` with `knobs` applied: the chip its design file expands to
    (or, for a catalog chip, its variant: `explore.variant`), its cost and power, checked against
    `bounds` and then `cost.unit.check_design`."""
    try:
        if catalog:
            variant = apply_catalog(base, knobs)
            chip = chip_from_mapping(variant, origin, str(variant["id"]))
        else:
            chip = design_chip(base, knobs, origin)
        unit = unit_cost(chip, volume=volume)
    except TapeoutError as exc:
        return Silicon(chip=None, metrics={}, reason=str(exc), violation=1.0)
    metrics = {
        "die_area_mm2": unit.area.total, "unit_cost_usd": unit.total_usd, "power_w": unit.power.full_load_w,
        "tdp_w": chip.tdp_w, "memory_gb": chip.memory.capacity_gb,
        "memory_bandwidth_gb_s": chip.memory.bandwidth_gb_s, "bf16_tflops": chip.peak_flops("bf16") / 1e12,
        "sustained_clock": unit.power.sustained_clock,
        "tco_usd_per_hour": chip_tco(unit.total_usd, chip.tdp_w, tco).usd_per_hour,
    }  # fmt: skip
    reason, violation = constraints(metrics, bounds)
    if reason:
        return Silicon(chip=chip, metrics=metrics, reason=reason, violation=violation)
    try:
        check_design(chip, unit=unit)
    except TapeoutError as exc:
        return Silicon(chip=chip, metrics=metrics, reason=str(exc), violation=1.0)
    return Silicon(chip=chip, metrics=metrics)


def constraints(metrics: Mapping[str, float], bounds: tuple[Bound, ...]) -> tuple[str, float]:
    """Which of the space's constraints a design's silicon metrics break ("" when none), and how
    far outside them it is (the summed relative distance)."""
    violation = sum(b.violation(metrics[b.metric]) for b in bounds)
    if not violation:
        return "", 0.0
    failed = [b for b in bounds if b.violation(metrics[b.metric]) > 0]
    got = ", ".join(f"{b.metric} is {metrics[b.metric]:,.4g}" for b in failed)
    return f"constraint {'; '.join(str(b) for b in failed)}: {got}", violation


def design_chip(base: Mapping[str, object], knobs: Mapping[str, Value], origin: str) -> ChipSpec:
    """The chip a design file `base` with `knobs` applied expands to (checked by its schema)."""
    return chip_from_mapping(expand_design(apply(base, knobs), origin), origin, str(base.get("id")))
