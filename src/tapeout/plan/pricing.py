"""What each candidate chip is paid at (a catalog or given price with its levy, or for our own
designs the unit cost with the NRE spread over a volume), its TCO per chip, the price of a unit
of work, and the volume at which an in-house design breaks even with a bought fleet."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tapeout.cost.api import market_price
from tapeout.cost.tco import Tco, TcoAssumptions, chip_tco
from tapeout.cost.unit import unit_cost
from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import get_chip
from tapeout.hardware.spec import ChipSpec
from tapeout.plan.capacity import UNITS, Capacity
from tapeout.plan.demand import Candidate, Demand

BREAK_EVEN_MAX_VOLUME = 1e10  # units: beyond this, a design "never" breaks even


@dataclass(frozen=True, slots=True, kw_only=True)
class Priced:
    """A candidate with the price it is paid at and its TCO per chip."""

    candidate: Candidate
    chip: ChipSpec
    price_usd: float  # before the levy
    price_source: str
    in_house: bool
    volume: int | None
    tco: Tco

    @property
    def key(self) -> str:
        return self.candidate.key

    @property
    def cap(self) -> float:
        return math.inf if self.candidate.max_chips is None else self.candidate.max_chips

    def as_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "candidate": self.key, "hardware": self.chip.id, "in_house": self.in_house,
            "price_usd": self.price_usd, "price_source": self.price_source, "levy": c.levy,
            "price_with_levy_usd": self.price_usd * (1 + c.levy), "volume": self.volume,
            "max_chips": c.max_chips, "tco_per_chip_usd": self.tco.total_usd,
            "usd_per_chip_hour": self.tco.usd_per_hour,
        }  # fmt: skip


def in_house_price(chip: ChipSpec, volume: int) -> tuple[float, float]:
    """Per-unit cost of our own design built `volume` times (NRE share included), and the NRE."""
    unit = unit_cost(chip, volume=volume)
    return unit.total_usd, unit.nre_usd


def price(c: Candidate, chip: ChipSpec, volume: int | None) -> tuple[float, str]:
    """The price paid per chip before the levy, and where it came from."""
    if c.price_usd is not None:
        return c.price_usd, "demand file (price_usd)"
    if chip.vendor == "tapeout":
        v = c.volume or volume
        assert v is not None
        unit, nre = in_house_price(chip, v)
        return unit, f"unit cost at a volume of {v:,} (NRE ${nre:,.0f} included)"
    try:
        newest = market_price(chip, c.region)
    except TapeoutError as exc:
        raise TapeoutError(f"candidate {c.key!r}: {exc}; give price_usd (unit: US dollars)") from None
    if newest is None or newest.usd is None:
        raise TapeoutError(
            f"candidate {c.key!r}: {chip.id} has no purchase price in the catalog; give price_usd (unit: US dollars)"
        )
    where = f", {newest.region}" if newest.region else ""
    return newest.usd, f"catalog {newest.date}{where}: {newest.kind} ({newest.source})"


def priced(c: Candidate, volume: int | None, a: TcoAssumptions) -> Priced:
    chip = get_chip(c.hardware)
    usd, source = price(c, chip, volume)
    ours = chip.vendor == "tapeout" and c.price_usd is None
    return Priced(candidate=c, chip=chip, price_usd=usd, price_source=source, in_house=ours,
                  volume=(c.volume or volume) if ours else None,
                  tco=chip_tco(usd * (1 + c.levy), chip.tdp_w, a))  # fmt: skip


def work_price(d: Demand, chips: int, p_hour: float, cap: Capacity | None, rate: float) -> float:
    """Dollars per unit of work of a fleet of `chips` chips costing `p_hour` dollars per chip-hour."""
    if d.kind == "training":
        assert cap is not None and cap.run_days is not None
        return chips * p_hour * cap.run_days * 24  # one run: its chips for its duration
    per = UNITS[d.kind][1]
    assert per is not None
    return chips * p_hour / (rate * 3600) * per


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakEven:
    """The volume at which an in-house design's fleet for a demand costs what the cheapest bought
    one does (None: never, even with the NRE spread to nothing)."""

    candidate: str
    against: str
    fleet_chips: int
    nre_usd: float
    bought_fleet_tco_usd: float
    volume: int | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "candidate": self.candidate, "fleet_chips": self.fleet_chips, "nre_usd": self.nre_usd,
            "bought_fleet_tco_usd": self.bought_fleet_tco_usd, "volume": self.volume, "against": self.against,
        }  # fmt: skip
        if self.volume is None:
            out["note"] = "never: costs more even with the NRE spread to nothing"
        else:
            out["covered_by_this_fleet"] = self.volume <= self.fleet_chips
        return out


def break_even(p: Priced, chips: int, target_usd: float, against: str, a: TcoAssumptions) -> BreakEven:
    """The volume at which `chips` of the in-house design `p` cost `target_usd` over the TCO period."""

    def fleet_usd(volume: float) -> float:
        unit, _ = in_house_price(p.chip, max(1, round(volume)))
        return chips * chip_tco(unit * (1 + p.candidate.levy), p.chip.tdp_w, a).total_usd

    _, nre = in_house_price(p.chip, 1)
    volume: int | None
    if fleet_usd(BREAK_EVEN_MAX_VOLUME) > target_usd:
        volume = None
    elif fleet_usd(1) <= target_usd:
        volume = 1
    else:
        lo, hi = 0.0, math.log10(BREAK_EVEN_MAX_VOLUME)
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if fleet_usd(10**mid) <= target_usd else (mid, hi)
        volume = math.ceil(10**hi)
    return BreakEven(candidate=p.key, against=against, fleet_chips=chips, nre_usd=nre,
                     bought_fleet_tco_usd=target_usd, volume=volume)  # fmt: skip
