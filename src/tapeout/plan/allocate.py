"""The fleet's allocation: each demand served by the candidates in order of TCO per unit of
capacity, the cheapest first, taking whole groups until the demand is met or the candidate's
availability cap binds, then the next; demands are filled in order of regret (how much more the
second-best candidate costs per unit than the best: Vogel's rule for transportation problems),
so a demand with no good substitute gets a shared cap first. A training run is never split."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tapeout.errors import TapeoutError
from tapeout.plan.capacity import Capacity


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """Serving demand `demand` with candidate `candidate`: groups of `cap.chips` chips."""

    demand: str
    candidate: str
    cap: Capacity
    tco_per_chip_usd: float

    @property
    def usd_per_unit(self) -> float:
        """TCO per unit of capacity per second (the greedy's sort key)."""
        return self.tco_per_chip_usd / self.cap.per_chip


def groups_needed(rate: float, cap: Capacity) -> int:
    """Whole groups that meet `rate`.

    >>> from tapeout.parallel.recsys import RecsysPlan
    >>> groups_needed(1000.0, Capacity(chips=2, units_per_s=300.0, plan=RecsysPlan()))
    4
    """
    return 1 if not cap.divisible else max(1, math.ceil(rate / cap.units_per_s - 1e-9))


def allocate(
    rates: dict[str, float], options: dict[str, list[Option]], caps: dict[str, float]
) -> dict[str, dict[str, int]]:
    """Groups of each candidate per demand: cheapest per unit first, caps shared, demands in order
    of regret. Raises when the caps leave a demand short.

    >>> from tapeout.parallel.recsys import RecsysPlan
    >>> cap = Capacity(chips=1, units_per_s=10.0, plan=RecsysPlan())
    >>> opts = {"d": [Option(demand="d", candidate="a", cap=cap, tco_per_chip_usd=1.0),
    ...               Option(demand="d", candidate="b", cap=cap, tco_per_chip_usd=2.0)]}
    >>> allocate({"d": 100.0}, opts, {"a": 4, "b": float("inf")})
    {'d': {'a': 4, 'b': 6}}
    """
    left = dict(caps)

    def regret(name: str) -> float:
        costs = sorted(o.usd_per_unit for o in options[name])
        return costs[1] - costs[0] if len(costs) > 1 else math.inf

    out: dict[str, dict[str, int]] = {}
    for name in sorted(rates, key=regret, reverse=True):
        need = rates[name]
        got: dict[str, int] = {}
        for o in sorted(options[name], key=lambda o: o.usd_per_unit):
            if need <= 0:
                break
            groups = groups_needed(need, o.cap)
            if left[o.candidate] < groups * o.cap.chips:
                groups = int(left[o.candidate] // o.cap.chips)
            if groups <= 0 or (not o.cap.divisible and groups * o.cap.units_per_s < need):
                continue
            got[o.candidate] = groups
            left[o.candidate] -= groups * o.cap.chips
            need -= groups * o.cap.units_per_s
        if need > 1e-9 * rates[name]:
            tried = ", ".join(f"{o.candidate} (cap {caps[o.candidate]:,.0f} chips)" for o in options[name])
            raise TapeoutError(
                f"demand {name!r}: the availability caps leave it short by {need:,.4g} of {rates[name]:,.4g} "
                f"units/s; candidates able to serve it: {tried}"
            )
        out[name] = got
    return out
