"""The fleet planner: the fleet of lowest TCO that meets every demand, with every demand priced on
every candidate alone (`tapeout plan DEMAND.yaml`).

Capacities come from `plan.capacity` (serving ones first from the steady-state model; those
that can matter are then checked by simulation and the fleet solved again), prices from
`plan.pricing`, the fleet from the greedy of `plan.allocate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import tapeout.checks as checks
from tapeout.cost.tco import TcoAssumptions
from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import get_chip
from tapeout.hardware.spec import ChipSpec
from tapeout.plan.allocate import Option, allocate, groups_needed
from tapeout.plan.capacity import UNITS, Capacity, demand_rate
from tapeout.plan.demand import Demand, DemandFile, ServingDemand
from tapeout.plan.executor import capacities
from tapeout.plan.pricing import BreakEven, Priced, break_even, price, priced, work_price

# Candidates dearer per unit of serving capacity than the cheapest by more than this are not
# checked (unless the fleet uses them): the model's rate agrees with the full simulated search
# to within about -14 %/+10 %, so no pair of errors makes up 35 %.
CHECK_MARGIN = 0.35

MAX_WORKERS = 64  # processes for the capacity estimates; more than a machine's cores only waits


@dataclass(frozen=True, slots=True, kw_only=True)
class Use:
    """Groups of one candidate serving one demand."""

    candidate: str
    groups: int
    cap: Capacity
    priced: Priced

    @property
    def chips(self) -> int:
        return self.groups * self.cap.chips

    @property
    def tco_usd(self) -> float:
        return self.chips * self.priced.tco.total_usd

    def as_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "chips": self.chips, "groups": self.groups, "tco_usd": self.tco_usd,
                "capacity": self.groups * self.cap.units_per_s, "plan": self.cap.plan_dict()}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Alternative:
    """A demand served by one candidate alone: its chips and cost, or why it cannot."""

    candidate: str
    chips: int = 0
    tco_usd: float = 0.0
    work_usd: float = 0.0  # per million tokens, thousand samples, or run (see UNITS)
    cap: Capacity | None = None
    within_cap: bool = True
    error: str | None = None

    def as_dict(self, price_key: str) -> dict[str, Any]:
        if self.error is not None or self.cap is None:
            return {"candidate": self.candidate, "error": self.error}
        return {"candidate": self.candidate, "chips": self.chips, "tco_usd": self.tco_usd, price_key: self.work_usd,
                "capacity_per_chip": self.cap.per_chip, "plan": self.cap.plan_dict(),
                "within_cap": self.within_cap}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandPlan:
    """One demand: its rate, the fleet chosen for it, every candidate alone, break-even volumes."""

    demand: Demand
    rate: float
    fleet: tuple[Use, ...]
    alternatives: tuple[Alternative, ...]
    break_even: tuple[BreakEven, ...]
    work_usd: float | None  # the fleet's price of a unit of work (a split training run has none)

    @property
    def chips(self) -> int:
        return sum(u.chips for u in self.fleet)

    @property
    def tco_usd(self) -> float:
        return sum(u.tco_usd for u in self.fleet)

    def as_dict(self) -> dict[str, Any]:
        unit, _, price_key = UNITS[self.demand.kind]
        return {
            "demand": self.demand.name, "kind": self.demand.kind, "rate": self.rate, "unit": unit,
            "chips": self.chips, "tco_usd": self.tco_usd, price_key: self.work_usd,
            "fleet": [u.as_dict() for u in self.fleet],
            "alternatives": [a.as_dict(price_key) for a in self.alternatives],
            "break_even": [b.as_dict() for b in self.break_even],
        }  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetPlan:
    """The result of `plan`: per demand and per chip type, with `as_dict()` for JSON."""

    assumptions: TcoAssumptions
    candidates: tuple[Priced, ...]
    demands: tuple[DemandPlan, ...]

    @property
    def total_tco_usd(self) -> float:
        return sum(d.tco_usd for d in self.demands)

    @property
    def total_chips(self) -> int:
        return sum(d.chips for d in self.demands)

    def chips(self) -> list[dict[str, Any]]:
        """Per candidate used: its chips, TCO and the demands it serves."""
        out: dict[str, dict[str, Any]] = {}
        for d in self.demands:
            for u in d.fleet:
                row = out.setdefault(u.candidate, {"candidate": u.candidate, "hardware": u.priced.chip.id,
                                                   "chips": 0, "tco_usd": 0.0, "demands": {}})  # fmt: skip
                row["chips"] += u.chips
                row["tco_usd"] += u.tco_usd
                row["demands"][d.demand.name] = u.chips
        return list(out.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_tco_usd": self.total_tco_usd, "total_chips": self.total_chips,
            "tco_assumptions": asdict(self.assumptions), "candidates": [p.as_dict() for p in self.candidates],
            "demands": [d.as_dict() for d in self.demands], "chips": self.chips(),
        }  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class _Solution:
    """The fleet for given capacities: per (demand, candidate) the capacity or why there is
    none; per demand its rate, options and groups; per candidate its price."""

    caps: dict[tuple[str, str], Capacity]
    errors: dict[tuple[str, str], str]
    rates: dict[str, float]
    prices: dict[str, Priced]
    options: dict[str, list[Option]]
    alloc: dict[str, dict[str, int]]


def _solve(
    demand: DemandFile,
    found: dict[tuple[str, str], Capacity | str],
    chips: dict[str, ChipSpec],
    a: TcoAssumptions,
) -> _Solution:
    caps = {pair: r for pair, r in found.items() if isinstance(r, Capacity)}
    errors = {pair: r for pair, r in found.items() if isinstance(r, str)}
    by_chip = {(name, chips[k].id): r for (name, k), r in caps.items()}
    rates = {
        d.name: demand_rate(d, by_chip.get((d.name, d.capacity_of.hardware))
                            if isinstance(d, ServingDemand) and d.capacity_of else None)
        for d in demand.demands
    }  # fmt: skip
    for d in demand.demands:
        if not any((d.name, c.key) in caps for c in demand.candidates):
            why = "; ".join(f"{c.key}: {errors[d.name, c.key]}" for c in demand.candidates)
            raise TapeoutError(f"demand {d.name!r}: no candidate can meet it: {why}")
    # In-house designs default to the volume of chips they would need to serve alone every
    # demand they can serve: capacity does not depend on price, so this is self-consistent.
    volumes = {
        c.key: max(1, sum(groups_needed(rates[d.name], caps[d.name, c.key]) * caps[d.name, c.key].chips
                          for d in demand.demands if (d.name, c.key) in caps))
        for c in demand.candidates
    }  # fmt: skip
    prices = {c.key: priced(c, volumes[c.key], a) for c in demand.candidates}
    options = {
        d.name: [Option(demand=d.name, candidate=c.key, cap=caps[d.name, c.key],
                        tco_per_chip_usd=prices[c.key].tco.total_usd)
                 for c in demand.candidates if (d.name, c.key) in caps]
        for d in demand.demands
    }  # fmt: skip
    alloc = allocate(rates, options, {k: p.cap for k, p in prices.items()})
    return _Solution(caps=caps, errors=errors, rates=rates, prices=prices, options=options, alloc=alloc)


def _unchecked(demand: DemandFile, s: _Solution, chips: dict[str, ChipSpec]) -> set[tuple[str, str]]:
    """Serving capacities from the model alone that can matter: those the fleet uses, those of
    the hardware a `capacity_of` demand names, and those within CHECK_MARGIN of the cheapest
    per unit of capacity. The others are reported from the model."""
    out = set()
    for d in demand.demands:
        if not isinstance(d, ServingDemand):
            continue
        cheapest = min(o.usd_per_unit for o in s.options[d.name])
        for o in s.options[d.name]:
            if o.cap.check is not None and o.cap.check.simulated:
                continue
            named = d.capacity_of is not None and chips[o.candidate].id == d.capacity_of.hardware
            if o.candidate in s.alloc[d.name] or named or o.usd_per_unit <= cheapest * (1 + CHECK_MARGIN):
                out.add((d.name, o.candidate))
    return out


def _demand_plan(d: Demand, demand: DemandFile, s: _Solution, a: TcoAssumptions) -> DemandPlan:
    rate = s.rates[d.name]
    fleet = tuple(Use(candidate=k, groups=g, cap=s.caps[d.name, k], priced=s.prices[k])
                  for k, g in s.alloc[d.name].items())  # fmt: skip
    alternatives = []
    for c in demand.candidates:
        if (d.name, c.key) not in s.caps:
            alternatives.append(Alternative(candidate=c.key, error=s.errors[d.name, c.key]))
            continue
        cap, p = s.caps[d.name, c.key], s.prices[c.key]
        n = groups_needed(rate, cap) * cap.chips
        alternatives.append(Alternative(candidate=c.key, chips=n, tco_usd=n * p.tco.total_usd, cap=cap,
                                        work_usd=work_price(d, n, p.tco.usd_per_hour, cap, rate),
                                        within_cap=n <= p.cap))  # fmt: skip
    bought = [x for x in alternatives if x.cap is not None and not s.prices[x.candidate].in_house]
    evens = []
    if bought:
        cheapest = min(bought, key=lambda x: x.tco_usd)
        for o in s.options[d.name]:
            p = s.prices[o.candidate]
            if p.in_house:
                chips = groups_needed(rate, o.cap) * o.cap.chips
                evens.append(break_even(p, chips, cheapest.tco_usd, cheapest.candidate, a))
    chips = sum(u.chips for u in fleet)
    hour = sum(u.chips * u.priced.tco.usd_per_hour for u in fleet) / chips
    only = fleet[0].cap if len(fleet) == 1 else None
    work = work_price(d, chips, hour, only, rate) if d.kind != "training" or only else None
    return DemandPlan(demand=d, rate=rate, fleet=fleet, alternatives=tuple(alternatives), break_even=tuple(evens),
                      work_usd=work)  # fmt: skip


def plan(demand: DemandFile, workers: int = 1) -> FleetPlan:
    """The fleet of lowest TCO (by the greedy of `allocate`) that meets every demand.

    >>> from tapeout.plan.demand import parse_demand
    >>> f = plan(parse_demand({"candidates": [{"hardware": "h100-sxm"}, {"hardware": "h20"}],
    ...     "demands": [{"kind": "recsys", "name": "rank", "model": "dlrm-v2", "qps": 1e6,
    ...                  "latency_limit_s": 0.01, "pairs_per_sample": 100}]}))
    >>> f.total_tco_usd > 0, [c["candidate"] for c in f.chips()]
    (True, ['h100-sxm'])
    """
    workers = checks.count("workers", workers, high=MAX_WORKERS, unit="processes")
    a = demand.assumptions()
    chips = {c.key: get_chip(c.hardware) for c in demand.candidates}
    for c in demand.candidates:  # a price is needed for every candidate: check before the long part
        if chips[c.key].vendor != "tapeout":
            price(c, chips[c.key], None)
    pairs = [(d, c.key) for d in demand.demands for c in demand.candidates]
    found = dict(zip([(d.name, k) for d, k in pairs],
                     capacities([(d, chips[k].id) for d, k in pairs], workers, check=False), strict=True))  # fmt: skip
    # Serving capacities come from the model first; those that can matter are then checked by
    # simulation (see `_unchecked`), and the fleet solved again until all that matter are.
    by_name = {d.name: d for d in demand.demands}
    while True:
        sol = _solve(demand, found, chips, a)
        todo = sorted(_unchecked(demand, sol, chips))
        if not todo:
            break
        checked = capacities([(by_name[name], chips[key].id) for name, key in todo], workers)
        found.update(zip(todo, checked, strict=True))
    return FleetPlan(assumptions=a, candidates=tuple(sol.prices[c.key] for c in demand.candidates),
                     demands=tuple(_demand_plan(d, demand, sol, a) for d in demand.demands))  # fmt: skip
