"""Per workload: what each chip does under the limits and what a unit of work costs on it (from the
fleet plan), and for serving the latency against throughput curves of the plan's replicas (from
the planner's steady-state model of continuous batching, `sim.capacity.ServingModel`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import tapeout.api as api
from tapeout.parallel.inference import InferencePlan
from tapeout.plan.capacity import UNITS, Capacity
from tapeout.plan.demand import ServingDemand
from tapeout.plan.fleet import DemandPlan, FleetPlan
from tapeout.sim.capacity import ServingModel
from tapeout.sim.scenarios import auto_batch
from tapeout.study.answer import plan_source
from tapeout.study.result import Cell, Chart, Limit, Section, Series, Table
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model

CURVE_SHARES = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2)  # of the plan's rate
CURVE_CEILING = 10.0  # the chart's top, in multiples of the latency limit
PRICE_NAMES = {"serving": "$ per million output tokens", "recsys": "$ per thousand samples",
               "training": "$ per run"}  # fmt: skip
CURVE = "sim.capacity.ServingModel (the planner's steady-state model)"


def plan_text(cap: Capacity) -> str:
    """A replica or group in a few words: tp 4 ep 1, a recsys group, a training layout."""
    d = cap.plan_dict()
    keys = ("tp", "pp", "ep", "cp", "dp", "group_chips", "sharding")
    return " ".join(f"{k} {d[k]}" for k in keys if k in d and d[k] not in (None, 1)) or "1 chip"


def _table(i: int, dp: DemandPlan) -> Table:
    unit = UNITS[dp.demand.kind][0]
    rows: list[tuple[Cell, ...]] = []
    sources = []
    for j, a in enumerate(dp.alternatives):
        src = plan_source(i, f".alternatives[{j}]")
        if a.cap is None:
            rows.append((a.candidate, None, None, None, None, f"cannot: {a.error}"))
        else:
            how = a.cap.check.source if a.cap.check is not None else ""
            rows.append((a.candidate, a.chips, a.cap.per_chip, a.work_usd, a.tco_usd / 1e6,
                         plan_text(a.cap) + (f"; {how}" if how else "")))  # fmt: skip
        sources.append(src)
    return Table(title=f"{dp.demand.name}: {dp.rate:,.0f} {unit} ({dp.demand.model})",
                 columns=("chip", "chips", f"{unit} per chip", PRICE_NAMES[dp.demand.kind], "TCO, $M", "plan"),
                 rows=tuple(rows), sources=tuple(sources))  # fmt: skip


def _price_chart(i: int, dp: DemandPlan, ours: tuple[str, ...]) -> Chart:
    alts = [(j, a) for j, a in enumerate(dp.alternatives) if a.cap is not None]
    unit = UNITS[dp.demand.kind][0]
    s = Series(name=dp.demand.name, x=tuple(a.candidate for _, a in alts), y=tuple(a.work_usd for _, a in alts),
               sources=tuple(plan_source(i, f".alternatives[{j}]") for j, _ in alts),
               notes=tuple(f"{a.cap.per_chip:,.4g} {unit} per chip, {plan_text(a.cap)}" for _, a in alts
                           if a.cap is not None))  # fmt: skip
    best = min(alts, key=lambda x: x[1].work_usd)[1]
    mine = [a for _, a in alts if a.candidate in ours]
    tail = ""
    if mine:
        m = min(mine, key=lambda a: a.work_usd)
        tail = f"; the cheaper of ours, {m.candidate}, costs {m.work_usd / best.work_usd:.2f} times that"
    return Chart(title=f"{dp.demand.name}: {PRICE_NAMES[dp.demand.kind]}", kind="bar", x_title="chip",
                 y_title=PRICE_NAMES[dp.demand.kind], series=(s,),
                 reading=f"{best.candidate} does {dp.demand.name} cheapest, at {_money(best.work_usd)} "
                 f"{PRICE_NAMES[dp.demand.kind].removeprefix('$ ')}{tail}.")  # fmt: skip


def _money(x: float) -> str:
    """Dollars to three significant digits, never in scientific notation."""
    if x >= 100 or x <= 0:
        return f"${x:,.0f}"
    return f"${x:.{max(2, 2 - math.floor(math.log10(x)))}f}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """p99 TTFT and TPOT of one replica at a series of rates, per chip's throughput."""

    candidate: str
    tokens_per_chip: tuple[float, ...]
    ttft_s: tuple[float | None, ...]
    tpot_s: tuple[float | None, ...]
    capacity_per_chip: float
    source: str


@cache
def serving_model(d: ServingDemand, chip_id: str, plan: InferencePlan) -> tuple[ServingModel, int]:
    config = resolve_model(d.model, d.name, None)
    assert isinstance(config, LLMConfig)
    rep, _, _ = api.replica(config, chip_id, plan.chips, plan)
    return ServingModel(
        rep, d.input_len, d.output_len, max_batch=auto_batch(rep, d.input_len, d.output_len)
    ), plan.chips


def curve(d: ServingDemand, candidate: str, chip_id: str, cap: Capacity) -> Curve:
    """The latency curve of the plan's replica for `d` on `chip_id`, around its capacity."""
    assert isinstance(cap.plan, InferencePlan) and cap.requests_per_s is not None
    model, chips = serving_model(d, chip_id, cap.plan)
    rates = [cap.requests_per_s * s for s in CURVE_SHARES]

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return Curve(
        candidate=candidate, tokens_per_chip=tuple(r * d.output_len / chips for r in rates),
        ttft_s=tuple(finite(model.ttft_quantile(r)) for r in rates),
        tpot_s=tuple(finite(model.tpot_quantile(r)) for r in rates),
        capacity_per_chip=cap.per_chip, source=f"{CURVE} of {plan_text(cap)} x {chip_id}",
    )  # fmt: skip


def _curve_chart(d: ServingDemand, curves: list[Curve], metric: str) -> Chart:
    limit = d.ttft_limit_s if metric == "ttft" else d.tpot_limit_s
    # Past a replica's capacity the queue grows without bound and the quantile with it: points
    # beyond CURVE_CEILING times the limit are left out of the chart (the reading says so).
    ceiling = CURVE_CEILING * limit
    series = tuple(
        Series(name=c.candidate, x=c.tokens_per_chip,
               y=tuple(None if v is None or v > ceiling else 1e3 * v
                       for v in (c.ttft_s if metric == "ttft" else c.tpot_s)),
               sources=tuple(c.source for _ in c.tokens_per_chip), mode="lines+markers",
               notes=tuple(f"{100 * s:g} % of the plan's rate" for s in CURVE_SHARES))
        for c in curves
    )  # fmt: skip
    best = max(curves, key=lambda c: c.capacity_per_chip)
    name = "TTFT" if metric == "ttft" else "TPOT"
    at_capacity = [(c.ttft_s if metric == "ttft" else c.tpot_s)[CURVE_SHARES.index(1.0)] for c in curves]
    binds = any(v is not None and v >= 0.8 * limit for v in at_capacity)
    ends = (f"Each curve rises to the {name} limit ({1e3 * limit:g} ms) where its chip's capacity ends"
            if binds else f"At each chip's capacity the p99 {name} stays under its limit ({1e3 * limit:g} ms): "
            "the other latency limit sets the capacity")  # fmt: skip
    return Chart(title=f"{d.name}: p99 {name} against throughput per chip", kind="line",
                 x_title="output tokens/s per chip", y_title=f"p99 {name}, ms", series=series, log_x=True, log_y=True,
                 limits=(Limit(axis="y", value=1e3 * limit, label=f"p99 {name} limit"),),
                 reading=f"{ends}; {best.candidate} reaches furthest, {best.capacity_per_chip:,.0f} tokens/s per chip. "
                 f"Points past {CURVE_CEILING:g} times the limit (an unbounded queue) are not drawn.")  # fmt: skip


def workloads(fleet: FleetPlan, ours: tuple[str, ...]) -> Section:
    """The per-workload section: tables, price charts, and the serving curves."""
    tables, charts = [], []
    chips = {p.key: p.chip.id for p in fleet.candidates}
    for i, dp in enumerate(fleet.demands):
        tables.append(_table(i, dp))
        charts.append(_price_chart(i, dp, ours))
        if isinstance(dp.demand, ServingDemand):
            d = dp.demand
            curves = [
                curve(d, a.candidate, chips[a.candidate], a.cap) for a in dp.alternatives if a.cap is not None
            ]
            charts += [_curve_chart(d, curves, "tpot"), _curve_chart(d, curves, "ttft")]
    return Section(
        key="workloads", title="Per workload", tables=tuple(tables), charts=tuple(charts),
        intro="What one chip does for each workload under its limits, what a unit of work costs on it "
        "(TCO per chip-hour over the work), and for chat the latency each replica gives as its load grows.",
    )  # fmt: skip
