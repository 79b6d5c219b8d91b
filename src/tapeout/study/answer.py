"""The answer: what each way of meeting the demand costs, what our chips save against the baseline
and the cheapest bought fleet (with the validation error band carried through), and the volume at
which they break even. Every figure comes from one fleet plan (`plan.fleet.plan`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tapeout.cost.tco import TcoAssumptions, chip_tco
from tapeout.plan.fleet import Alternative, DemandPlan, FleetPlan
from tapeout.plan.pricing import BreakEven, Priced, break_even, in_house_price
from tapeout.study.result import Chart, Headline, Section, Series, Table
from tapeout.study.schema import Study

PLAN = "tapeout plan (the study's candidates and demands; JSON: data.plan)"
INTRO = (
    "Each option meets the whole demand: every bought chip alone, the cheapest bought fleet, each set of "
    "our designs we could build, and the plan's cheapest mix. Where an option's own chips cannot serve a "
    "demand, the cheapest bought chip serves it. Our designs cost their unit cost with the NRE spread over "
    "the chips that option builds of them."
)
KIND_OF = {"serving": "llm_inference", "recsys": "recsys_inference", "training": "llm_training"}


def plan_source(d: int, what: str = "") -> str:
    return f"{PLAN}: demands[{d}]{what}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One way of meeting every demand: per demand, the candidate used, its chips and TCO."""

    name: str
    parts: tuple[tuple[str, str, int, float], ...]  # (demand, candidate, chips, tco_usd)
    sources: tuple[str, ...]
    filled: str = ""  # the bought chips that serve the demands the option's own cannot

    @property
    def tco_usd(self) -> float:
        return sum(p[3] for p in self.parts)

    def demand_tco(self, demand: str) -> float:
        return sum(p[3] for p in self.parts if p[0] == demand)


def _alt(dp: DemandPlan, key: str) -> Alternative | None:
    a = next(a for a in dp.alternatives if a.candidate == key)
    return a if a.cap is not None else None


def _cheapest(dp: DemandPlan, keys: tuple[str, ...]) -> Alternative | None:
    alts = [a for k in keys if (a := _alt(dp, k)) is not None]
    return min(alts, key=lambda a: a.tco_usd) if alts else None


def _index(dp: DemandPlan, key: str) -> int:
    return next(j for j, a in enumerate(dp.alternatives) if a.candidate == key)


def option(study: Study, fleet: FleetPlan, name: str, keys: tuple[str, ...]) -> Option:
    """Per demand the cheapest of `keys` that can serve it, else the cheapest bought chip."""
    parts, sources, filled = [], [], []
    for i, dp in enumerate(fleet.demands):
        a = _cheapest(dp, keys)
        if a is None:
            a = _cheapest(dp, study.bought)
            assert a is not None  # the planner refuses a demand no candidate meets
            filled.append(f"{a.candidate} for {dp.demand.name}")
        parts.append((dp.demand.name, a.candidate, a.chips, a.tco_usd))
        sources.append(plan_source(i, f".alternatives[{_index(dp, a.candidate)}]"))
    return Option(name=name, parts=tuple(parts), sources=tuple(sources), filled=", ".join(filled))


def repriced(study: Study, fleet: FleetPlan, opt: Option) -> Option:
    """`opt` with our chips priced at the volume it builds of each (NRE over those chips)."""
    prices = {p.key: p for p in fleet.candidates}
    volumes: dict[str, int] = {}
    for _, key, chips, _ in opt.parts:
        if key in study.ours:
            volumes[key] = volumes.get(key, 0) + chips
    per_chip = {k: _tco_at(prices[k], v, fleet.assumptions) for k, v in volumes.items()}
    parts = tuple((d, k, n, n * per_chip[k] if k in per_chip else usd) for d, k, n, usd in opt.parts)
    return Option(name=opt.name, parts=parts, sources=opt.sources, filled=opt.filled)


def _tco_at(p: Priced, volume: int, a: TcoAssumptions) -> float:
    unit, _ = in_house_price(p.chip, volume)
    return chip_tco(unit * (1 + p.candidate.levy), p.chip.tdp_w, a).total_usd


def options(study: Study, fleet: FleetPlan) -> tuple[list[Option], Option]:
    """Each bought candidate alone and the cheapest bought fleet; each set of our designs we could
    build (their chips priced at the volume that set builds); the plan's cheapest mix. Options fill
    the demands their chips cannot serve with the cheapest bought chip. Also the cheapest set of
    ours."""
    out = [option(study, fleet, k, (k,)) for k in study.bought]
    out.append(option(study, fleet, "cheapest bought", study.bought))
    ours = [
        repriced(study, fleet, option(study, fleet, "build " + " + ".join(keys), keys))
        for n in range(1, len(study.ours) + 1)
        for keys in itertools.combinations(study.ours, n)
    ]
    mix = tuple((dp.demand.name, u.candidate, u.chips, u.tco_usd) for dp in fleet.demands for u in dp.fleet)
    src = tuple(plan_source(i, ".fleet") for i, dp in enumerate(fleet.demands) for _ in dp.fleet)
    out += [*ours, Option(name="cheapest mix", parts=mix, sources=src)]
    return out, min(ours, key=lambda o: o.tco_usd)


def band(study: Study, fleet: FleetPlan, errors: dict[str, float], opt: Option, up: bool) -> float:
    """`opt`'s TCO if every capacity were off by its kind's error (chips go as 1 / capacity): `up`
    with capacities lower than modelled."""
    total = 0.0
    for dp in fleet.demands:
        e = errors.get(KIND_OF[dp.demand.kind], 0.0)
        total += opt.demand_tco(dp.demand.name) / ((1 - e) if up else (1 + e))
    return total


Even = tuple[str, BreakEven, str, bool]  # demand, break-even, source, against the baseline


def break_evens(study: Study, fleet: FleetPlan, ours: Option, baseline: Option) -> list[Even]:
    """For each demand our option serves with our own chip: the volume at which that fleet costs
    what the baseline's does (computed here) and what the cheapest bought one does (the plan's)."""
    prices = {p.key: p for p in fleet.candidates}
    out: list[Even] = []
    for i, (dp, part) in enumerate(zip(fleet.demands, ours.parts, strict=True)):
        key, chips = part[1], part[2]
        if key not in study.ours:
            continue
        theirs = baseline.parts[i][1]
        b = break_even(prices[key], chips, baseline.demand_tco(dp.demand.name), theirs, fleet.assumptions)
        out.append((dp.demand.name, b, f"plan.pricing.break_even against {theirs} ({plan_source(i)})", True))
        for j, b in enumerate(dp.break_even):
            if b.candidate == key and b.against != theirs:
                out.append((dp.demand.name, b, plan_source(i, f".break_even[{j}]"), False))
    return out


def _options_chart(opts: list[Option], fleet: FleetPlan) -> Chart:
    names = [d.demand.name for d in fleet.demands]
    series = tuple(
        Series(name=n, x=tuple(o.name for o in opts), y=tuple(o.demand_tco(n) / 1e6 for o in opts),
               sources=tuple(o.sources[names.index(n)] for o in opts),
               notes=tuple(f"{p[2]:,} x {p[1]}" for o in opts for p in o.parts if p[0] == n))
        for n in names
    )  # fmt: skip
    best = min(opts, key=lambda o: o.tco_usd)
    return Chart(title="Fleet cost of each option for the whole demand", kind="stack", x_title="option",
                 y_title=f"TCO over {fleet.assumptions.years:g} years, $M", series=series,
                 reading=f"The cheapest way to meet the demand is {best.name}, at ${best.tco_usd / 1e6:,.0f}M; "
                 "each bar adds up its demands, and hovering shows the chips behind each part.")  # fmt: skip


Saving = tuple[str, float, float, float, float]  # against, their TCO, ours, savings low, high


def _savings_table(rows: list[Saving], q: float) -> Table:
    return Table(
        title="Savings of our chips (positive: ours cost less)",
        columns=("against", "their TCO, $M", "ours, $M", "savings, $M", "savings, %", "band low, $M",
                 "band high, $M"),
        rows=tuple((n, t / 1e6, o / 1e6, (t - o) / 1e6, 100 * (t - o) / t, lo / 1e6, hi / 1e6)
                   for n, t, o, lo, hi in rows),
        sources=tuple(f"{PLAN}; band: tapeout validate --json ({100 * q:g}th percentile error by kind)"
                      for _ in rows),
        note="The band: every capacity off by its kind's observed error, ours lower and theirs higher "
        "(low) or the other way round (high); a fleet's chips go as one over its capacity.",
    )  # fmt: skip


def _break_even_table(evens: list[Even]) -> Table:
    rows = tuple(
        (d, b.candidate, b.against, b.fleet_chips, b.volume, "never" if b.volume is None
         else ("yes" if b.volume <= b.fleet_chips else "no"), b.nre_usd / 1e6)
        for d, b, _, _ in evens
    )  # fmt: skip
    return Table(title="Break-even volume: units of our chip at which its fleet costs what the bought one does",
                 columns=("demand", "ours", "against", "fleet chips", "break-even units", "this fleet reaches it",
                          "NRE, $M"), rows=rows, sources=tuple(s for _, _, s, _ in evens),
                 note="The unit cost carries the NRE spread over the units built; 'never' means the fleet costs "
                 "more even with the NRE spread over 10^10 units.")  # fmt: skip


def answer(
    study: Study, fleet: FleetPlan, errors: dict[str, float]
) -> tuple[Section, Headline, Option, Option]:
    """The answer section, the headline, our option and the baseline's."""
    opts, ours = options(study, fleet)
    by_name = {o.name: o for o in opts}
    baseline, bought = by_name[study.baseline], by_name["cheapest bought"]
    rows: list[Saving] = []
    for other in (baseline, bought):
        low = band(study, fleet, errors, other, False) - band(study, fleet, errors, ours, True)
        high = band(study, fleet, errors, other, True) - band(study, fleet, errors, ours, False)
        rows.append((other.name, other.tco_usd, ours.tco_usd, low, high))
    table = _savings_table(rows, study.error_quantile)
    evens = break_evens(study, fleet, ours, baseline)
    save, (low, high) = baseline.tco_usd - ours.tco_usd, rows[0][3:5]
    headline = Headline(
        text=_headline_text(study, ours, baseline, bought, low, high, evens),
        figures={"ours_tco_usd": ours.tco_usd, "baseline": baseline.name, "baseline_tco_usd": baseline.tco_usd,
                 "savings_usd": save, "savings_low_usd": low, "savings_high_usd": high,
                 "cheapest_bought": bought.name, "cheapest_bought_tco_usd": bought.tco_usd,
                 "error_quantile": study.error_quantile},
        source=PLAN,
    )  # fmt: skip
    band_chart = _band_chart(rows, study.error_quantile)
    section = Section(
        key="answer", title="The answer", intro=INTRO, tables=(table, _break_even_table(evens),
                                                                       _options_table(opts)),
        charts=(_options_chart(opts, fleet), band_chart),
    )  # fmt: skip
    return section, headline, ours, baseline


def _options_table(opts: list[Option]) -> Table:
    return Table(
        title="Every option, demand by demand",
        columns=("option", "demand", "chips", "chip", "TCO, $M"),
        rows=tuple((o.name, d, n, k, usd / 1e6) for o in opts for d, k, n, usd in o.parts),
        sources=tuple(s for o in opts for s in o.sources),
    )


def _band_chart(rows: list[Saving], q: float) -> Chart:
    s = Series(name="savings", x=tuple(r[0] for r in rows), y=tuple((r[1] - r[2]) / 1e6 for r in rows),
               sources=tuple(f"{PLAN}; band: tapeout validate --json, {100 * q:g}th percentile error by kind"
                             for _ in rows),
               error_low=tuple(((r[1] - r[2]) - r[3]) / 1e6 for r in rows),
               error_high=tuple((r[4] - (r[1] - r[2])) / 1e6 for r in rows))  # fmt: skip
    sure = all(r[3] > 0 or r[4] < 0 for r in rows)  # no comparison's band holds zero
    return Chart(title="Savings of our chips, with the model's observed error band", kind="bar",
                 x_title="against", y_title="savings over the TCO period, $M", series=(s,),
                 reading=("The sign of each comparison's savings holds across its error band." if sure else
                          "The error band crosses zero for at least one comparison: the model cannot tell "
                          "which is cheaper there."))  # fmt: skip


def _headline_text(
    study: Study, ours: Option, baseline: Option, bought: Option, low: float, high: float,
    evens: list[Even],
) -> str:  # fmt: skip
    save = baseline.tco_usd - ours.tco_usd
    pct = 100 * abs(save) / baseline.tco_usd
    vs_best = bought.tco_usd - ours.tco_usd
    m = 1e6
    theirs = baseline.name + (f" (with {baseline.filled})" if baseline.filled else "")
    text = (
        f"Cheapest of our own: {ours.name.removeprefix('build ')}"
        + (f" (with {ours.filled} bought)" if ours.filled else "")
        + f", ${ours.tco_usd / m:,.0f}M over {study.demand.assumptions().years:g} years. Against buying {theirs}, "
        f"${baseline.tco_usd / m:,.0f}M, it {'saves' if save >= 0 else 'costs'} ${abs(save) / m:,.0f}M "
        f"({pct:.0f} %{'' if save >= 0 else ' more'}); within the model's {100 * study.error_quantile:g}th-percentile "
        f"error the savings run from ${low / m:,.0f}M to ${high / m:,.0f}M. Against the cheapest bought fleet "
        f"(${bought.tco_usd / m:,.0f}M) it {'saves' if vs_best >= 0 else 'costs'} ${abs(vs_best) / m:,.0f}M"
        f"{'' if vs_best >= 0 else ' more'}."
    )
    against = [(d, b) for d, b, _, vs_baseline in evens if vs_baseline]
    if against:
        d, b = max(against, key=lambda x: x[1].fleet_chips)
        when = "never" if b.volume is None else f"at {b.volume:,} units"
        text += f" On {d}, {b.candidate} breaks even with {b.against} {when} (its fleet: {b.fleet_chips:,} chips)."
    return text
