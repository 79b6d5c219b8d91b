"""Unit cost of a chip: dies per wafer, yield, known-good die, memory, packaging, test, board,
and for our own designs the NRE spread over a production volume; its power at full load; and
the checks a design must pass (reticle, HBM shoreline, power budget).

Formulas (research/hardware_cost.md 2.4, as in ttm-cas): dies per wafer
`pi (d/2)^2 / A - pi d / sqrt(2 A)`; negative-binomial yield `(1 + D0 A / alpha)^-alpha`.
No redundancy is credited: a die with spare cores (132 of 144 SMs) yields better than this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tapeout.cost.area import Area, DieInputs, die_area, die_inputs, die_of
from tapeout.cost.silicon import Silicon, silicon
from tapeout.errors import TapeoutError
from tapeout.hardware.design import HBM_STACK_GB_S
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.calibration import table
from tapeout.perf.energy import full_load_watts
from tapeout.units import Num


def dies_per_wafer(area_mm2: Num, diameter_mm: float = 300.0) -> Num:
    """Whole dies on a round wafer, edge loss included (a number, or one per design).

    >>> round(float(dies_per_wafer(814)), 1)
    63.5
    """
    return math.pi * (diameter_mm / 2) ** 2 / area_mm2 - math.pi * diameter_mm / np.sqrt(2 * area_mm2)


def die_yield(area_mm2: Num, defects_per_cm2: float, alpha: float = 3.0) -> Num:
    """Share of good dies, negative binomial with clustering `alpha`.

    >>> round(float(die_yield(814, 0.10)), 3)
    0.487
    """
    return (1 + defects_per_cm2 * area_mm2 / 100 / alpha) ** -alpha


@dataclass(frozen=True, slots=True, kw_only=True)
class Power:
    """Watts at full load and nominal clock, and what the power budget (TDP) leaves of it."""

    compute_w: float  # the matrix units at their bf16 peak (perf/power.py)
    memory_w: float  # DRAM streaming at full bandwidth
    idle_w: float  # static and clocking: the calibrated idle share of the budget
    budget_w: float

    @property
    def full_load_w(self) -> float:
        return self.compute_w + self.memory_w + self.idle_w

    @property
    def sustained_clock(self) -> float:
        return float(sustained_clock(self.budget_w, self.idle_w, self.memory_w, self.compute_w))


def sustained_clock(budget_w: Num, idle_w: Num, memory_w: Num, compute_w: Num) -> Num:
    """Clock fraction a full matrix load sustains within the budget (power ~ clock^3): numbers,
    or one per design."""
    headroom = np.maximum(budget_w - idle_w - memory_w, 0.0)
    return np.minimum(1.0, (headroom / compute_w) ** (1 / 3))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitCost:
    """One package, in US dollars; NRE spread over `volume` units for our own designs."""

    area: Area
    dies_per_package: int
    dies_per_wafer: float
    yield_: float
    die_usd: float  # known-good dies of one package
    memory_usd: float
    package_usd: float
    test_usd: float
    board_usd: float
    nre_usd: float  # the whole NRE (0 for bought chips)
    volume: int | None
    power: Power

    @property
    def manufacturing_usd(self) -> float:
        return self.die_usd + self.memory_usd + self.package_usd + self.test_usd + self.board_usd

    @property
    def total_usd(self) -> float:
        return self.manufacturing_usd + (self.nre_usd / self.volume if self.volume else 0.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "die_area_mm2": round(self.area.total, 1),
            "area_mm2": self.area.as_dict(),
            "dies_per_package": self.dies_per_package,
            "dies_per_wafer": round(self.dies_per_wafer, 1),
            "yield": round(self.yield_, 4),
            "cost_usd": {
                "dies": round(self.die_usd, 2), "memory": round(self.memory_usd, 2),
                "package": round(self.package_usd, 2), "test": round(self.test_usd, 2),
                "board": round(self.board_usd, 2),
                "nre_per_unit": round(self.nre_usd / self.volume, 2) if self.volume else 0.0,
            },
            "manufacturing_usd": round(self.manufacturing_usd, 2),
            "nre_usd": self.nre_usd,
            "volume": self.volume,
            "unit_cost_usd": round(self.total_usd, 2),
            "power_w": {
                "compute": round(self.power.compute_w, 1), "memory": round(self.power.memory_w, 1),
                "idle": round(self.power.idle_w, 1), "full_load": round(self.power.full_load_w, 1),
                "budget": self.power.budget_w, "sustained_clock": round(self.power.sustained_clock, 3),
            },
        }  # fmt: skip


def power(chip: ChipSpec) -> Power:
    """Full-load power by part, against the chip's TDP as its budget."""
    cal = table().for_family(chip.family)
    compute_w, memory_w = full_load_watts(chip)
    return Power(
        compute_w=compute_w,
        memory_w=memory_w,
        idle_w=chip.tdp_w * cal.idle_power_fraction,
        budget_w=chip.tdp_w,
    )


def nre_usd(chip: ChipSpec, data: Silicon | None = None) -> float:
    """Masks, licensed IP and design for one tape-out at the chip's node."""
    node = (data or silicon()).node(chip.process_node, chip.id)
    return node.masks_usd + node.ip_usd + node.design_usd


def unit_cost(chip: ChipSpec, *, volume: int | None = None, data: Silicon | None = None) -> UnitCost:
    """What one package of `chip` costs to make; with `volume`, our NRE spread over it.

    >>> from tapeout.hardware import get_chip
    >>> c = unit_cost(get_chip("tapeout-i1"), volume=200_000)
    >>> c.total_usd > c.manufacturing_usd > c.memory_usd
    True
    """
    s = data or silicon()
    if volume is not None and volume < 1:
        raise TapeoutError(f"field 'volume': must be >= 1 unit, got {volume}")
    x = die_inputs(chip, s)
    area = die_area(chip, s)
    if dies_per_wafer(area.total, s.wafer_diameter_mm) < 1:
        raise TapeoutError(f"{chip.id}: {wafer_problem(area.total)}")
    parts = package_costs(area.total, x, chip.memory.capacity_gb, chip.memory.type, s)
    return UnitCost(
        area=area, dies_per_package=x.dies_per_package, board_usd=s.board_usd,
        nre_usd=nre_usd(chip, s) if volume is not None else 0.0, volume=volume, power=power(chip),
        **{k: float(v) for k, v in parts.items()},
    )  # fmt: skip


def package_costs(
    area_mm2: Num, x: DieInputs, capacity_gb: Num, memory_type: str, s: Silicon
) -> dict[str, Num]:
    """The parts of `UnitCost` that follow from the die's area, its memory and package (numbers,
    or one per design): dies per wafer, yield, known-good dies, memory, package and test."""
    n = x.dies_per_package
    dpw = dies_per_wafer(area_mm2, s.wafer_diameter_mm)
    y = die_yield(area_mm2, x.node.defects_per_cm2, s.yield_alpha)
    dies = n * x.node.wafer_usd / (dpw * y)
    memory = capacity_gb * s.memory_usd_per_gb[memory_type]
    if x.hbm:
        package: Num = (area_mm2 * n + x.interfaces * s.hbm_footprint_mm2) * s.cowos_usd_per_mm2
    else:
        package = s.organic_package_usd
    test = s.test_fraction * (dies + memory + package)
    return {"dies_per_wafer": dpw, "yield_": y, "die_usd": dies, "memory_usd": memory, "package_usd": package,
            "test_usd": test}  # fmt: skip


def wafer_problem(area_mm2: float) -> str:
    return f"a {area_mm2:,.0f} mm^2 die does not fit on a wafer"


def check_design(chip: ChipSpec, data: Silicon | None = None, *, unit: UnitCost | None = None) -> None:
    """A design must fit the reticle, seat its HBM on the die's long edges and sustain at least
    half its clock within its power budget; each failure names the numbers. `unit`: the chip's
    `unit_cost` when the caller has it already (its area and power are used, not recomputed)."""
    s = data or silicon()
    area = die_area(chip, s).total if unit is None else unit.area.total
    hbm = chip.memory.type in HBM_STACK_GB_S
    problem = design_problem(
        area, hbm, die_of(chip).memory_interfaces, power(chip) if unit is None else unit.power, s
    )
    if problem:
        raise TapeoutError(f"{chip.id}: {problem}")


def design_problem(area_mm2: float, hbm: bool, sites: float, p: Power, s: Silicon) -> str:
    """What keeps a die of `area_mm2` with `sites` memory interfaces and power `p` from being
    built (`check_design`'s rules), or "" when nothing does."""
    if area_mm2 > s.reticle_mm2:
        return f"the modelled die is {area_mm2:,.0f} mm^2, over the {s.reticle_mm2:,.0f} mm^2 reticle limit"
    if hbm:
        long_edge = math.sqrt(area_mm2 * 33 / 26)  # the reticle's aspect ratio
        seats = 2 * math.floor(long_edge / s.hbm_site_edge_mm)
        if sites > seats:
            return (
                f"{sites:g} HBM stacks need {sites / 2 * s.hbm_site_edge_mm:.1f} mm of each long "
                f"edge, but a {area_mm2:,.0f} mm^2 die has {long_edge:.1f} mm edges: at most {seats} stacks"
            )
    if p.sustained_clock < 0.5:
        return (
            f"over its power budget: full load draws {p.full_load_w:,.0f} W (compute "
            f"{p.compute_w:,.0f}, memory {p.memory_w:,.0f}, idle {p.idle_w:,.0f}) against "
            f"{p.budget_w:,.0f} W, which sustains only {100 * p.sustained_clock:.0f} % of the clock"
        )
    return ""
