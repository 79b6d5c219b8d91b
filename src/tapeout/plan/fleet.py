"""The fleet planner: the capacity of each candidate chip for each demand, from the simulators;
each chip's TCO, from the cost modules; and the fleet of lowest TCO that meets every demand.

Capacity (one estimate per demand and candidate, cached by what it depends on):
- serving: output tokens/s of one replica at the p99 TTFT and TPOT limits. The replica is the
  tensor-parallel width (a power of two within the scale-up domain; experts spread as wide)
  that serves the most per chip among the smallest that fits (weights plus one request's KV
  cache) and the next two doublings. Each width's rate comes from the steady-state model of
  continuous batching (`sim.capacity`, milliseconds). For the candidates that can matter (see
  `_unchecked`) the best width's rate is then checked by one short run of the serving
  simulator, and only if the run misses a limit by more than CHECK_TOLERANCE does a bisection
  with such runs replace it (see docs/plan.md for the agreement with the full simulated search).
- recsys: samples/s of the smallest group of chips (1, 2, 4, ...) that holds the tables, at
  the p99 latency limit (the recsys simulator's server mode).
- training: the chips that finish `tokens` by the deadline: the fastest plan at a reference size
  (the training plan search, bounded), then that plan's data-parallel width grown until the run
  meets the deadline (each size timed by the training step model).

Optimisation: each demand is served by the candidates in order of TCO per unit of capacity, the
cheapest first, taking whole replicas (groups) until the demand is met or the candidate's
availability cap binds, then the next; demands are filled in order of regret (how much more the
second-best candidate costs per unit than the best: Vogel's rule for transportation problems),
so a demand with no good substitute gets a shared cap first. A training run is never split.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from tapeout.cost.api import market_price
from tapeout.cost.tco import Tco, TcoAssumptions, chip_tco
from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import get_chip
from tapeout.hardware.spec import ChipSpec, Precision
from tapeout.plan.demand import (
    Candidate,
    Demand,
    DemandFile,
    RecsysDemand,
    ServingDemand,
    TrainingDemand,
)

if TYPE_CHECKING:
    from tapeout.sim.capacity import ServingModel
    from tapeout.sim.llm import Replica

SERVING_WIDTHS = 3  # tensor-parallel widths modelled: the smallest that fits, and two doublings
CHECK_ITERATIONS = 6000  # the length of the run that checks the model's rate, in iterations (about)
CHECK_REQUESTS = (200, 2000)  # the run's requests: at least, at most
CHECK_TOLERANCE = 0.15  # how far the run's p99 may exceed a limit: a short run's p99 scatters this much
# Candidates dearer per unit of serving capacity than the cheapest by more than this are not
# checked (unless the fleet uses them): the model's rate agrees with the full simulated search
# to within about -14 %/+10 %, so no pair of errors makes up 35 %.
CHECK_MARGIN = 0.35
SERVING_STEPS = 4  # bisection steps on the rate when a check fails: 1/32 of the [1/2, 1] bracket
MAX_RECSYS_GROUP = 64  # chips: the largest group tried for holding the embedding tables
TRAIN_SEARCH_BUDGET = 2000  # plans the training search may time at the reference size
TRAIN_REFERENCE_NODES = 8  # the reference size of the training search, in nodes
BREAK_EVEN_MAX_VOLUME = 1e10  # units: beyond this, a design "never" breaks even

UNITS = {  # per demand kind: the unit of capacity, and how work is priced
    "serving": ("output tokens/s", 1e6, "usd_per_million_tokens"),
    "recsys": ("samples/s", 1e3, "usd_per_thousand_samples"),
    "training": ("tokens/s", None, "usd_per_run"),
}


# ---- capacity ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    """What one group of `chips` chips (a replica, a recsys group, a training cluster) does."""

    chips: int
    units_per_s: float
    plan: dict[str, Any]
    divisible: bool = True  # False: the group must take the whole demand (a training run)

    @property
    def per_chip(self) -> float:
        return self.units_per_s / self.chips


def _powers(limit: int) -> list[int]:
    return [2**i for i in range(int(math.log2(max(1, limit))) + 1)]


def _serving_plans(d: ServingDemand, chip: ChipSpec) -> list[tuple[int, Replica]]:
    """(tp, replica) for the smallest width that fits and the next ones up (SERVING_WIDTHS in all)."""
    from tapeout.sim.api import build_replica
    from tapeout.sim.scenarios import auto_batch
    from tapeout.workloads.llm import LLMConfig
    from tapeout.workloads.models import resolve_model

    config = resolve_model(d.model, d.name, None)
    if not isinstance(config, LLMConfig):
        raise TapeoutError(f"demand {d.name!r}: field 'model': {d.model!r} is not a language model")
    domain = chip.node.scale_up_domain_chips if chip.scale_up else 1
    fits: list[tuple[int, Replica]] = []
    last = ""
    for tp in _powers(domain):
        ep = tp if config.is_moe and config.experts % tp == 0 else 1
        try:
            replica, _ = build_replica(
                config, chip.id, tp, tp=tp, ep=ep, precision=d.precision, kv_precision=d.kv_precision
            )
            auto_batch(replica, d.input_len, d.output_len)
        except TapeoutError as exc:
            last = str(exc)
            if fits:
                break
            continue
        fits.append((tp, replica))
        if len(fits) == SERVING_WIDTHS:
            break
    if not fits:
        raise TapeoutError(f"the model does not fit on up to {domain} x {chip.id} (tensor-parallel): {last}")
    return fits


def _simulated_p99(
    replica: Replica, d: ServingDemand, rate: float, n: int, batch: int, warm_s: float
) -> tuple[float, float]:
    """p99 TTFT and TPOT of `n` requests simulated at `rate`, leaving out those that arrive in the
    first `warm_s` seconds (the run starts empty)."""
    from tapeout.sim.requests import Requests
    from tapeout.sim.serve import simulate

    reqs = Requests.poisson(n, rate, d.input_len, d.output_len)
    res = simulate(replica, reqs, max_batch=batch)
    steady = reqs.arrival_s >= min(warm_s, float(reqs.arrival_s[n // 2]))
    tpot = res.tpot_s[steady]
    return float(np.percentile(res.ttft_s[steady], 99)), float(np.percentile(tpot[np.isfinite(tpot)], 99))


def _checked_rate(
    replica: Replica, model: ServingModel, d: ServingDemand, rate: float
) -> tuple[float, dict[str, Any]]:
    """The model's `rate` if a simulated run there meets the limits to within CHECK_TOLERANCE;
    else a bisection with such runs (limits exact) below it, halving the lower end while it
    fails, up to four times (0 when nothing meets the limits). Returns the rate and what the
    accepted run saw."""
    load = model.load(rate)
    iteration_s = load.iteration_s if load else d.tpot_limit_s
    warm_s = iteration_s * model.decodes + (load.prefill_s if load else d.ttft_limit_s)  # a request's life

    def run(r: float, tolerance: float = 0.0) -> dict[str, Any] | None:
        n = int(np.clip(r * (CHECK_ITERATIONS * iteration_s + warm_s), *CHECK_REQUESTS))
        ttft, tpot = _simulated_p99(replica, d, r, n, model.max_batch, warm_s)
        ok = ttft <= d.ttft_limit_s * (1 + tolerance) and tpot <= d.tpot_limit_s * (1 + tolerance)
        return {"simulated_p99_ttft_s": ttft, "simulated_p99_tpot_s": tpot} if ok else None

    if rate <= 0:
        return 0.0, {}
    seen = run(rate, CHECK_TOLERANCE)
    if seen is not None:
        return rate, {"capacity_from": "model, checked by simulation", **seen}
    hi, lo = rate, rate / 2
    for _ in range(4):
        if (seen := run(lo)) is not None:
            break
        hi, lo = lo, lo / 2
    else:
        return 0.0, {}
    for _ in range(SERVING_STEPS):
        mid = (lo + hi) / 2
        if (got := run(mid)) is not None:
            lo, seen = mid, got
        else:
            hi = mid
    return lo, {"capacity_from": "simulation (the model's rate failed its check)", **seen}


@cache
def serving_capacity(d: ServingDemand, chip_id: str, check: bool = True) -> Capacity:
    """Output tokens/s of one replica of `d.model` on `chip_id` at the demand's latency limits;
    from the model alone when not `check`."""
    from tapeout.sim.capacity import ServingModel
    from tapeout.sim.llm import Batch
    from tapeout.sim.scenarios import auto_batch

    chip = get_chip(chip_id)
    plans = dict(_serving_plans(d, chip))
    for replica in plans.values():  # limits no rate can meet, whatever the load
        prompt = round(d.input_len)
        prefill = replica.step_time(Batch(prefill_tokens=prompt, prefill_seqs=1, prefill_context=prompt))
        decode = replica.step_time(Batch(decode_seqs=1, decode_context=round(d.input_len + d.output_len)))
        if prefill <= d.ttft_limit_s and decode <= d.tpot_limit_s:
            break
    else:
        raise TapeoutError(
            f"latency limits not met even by one request alone on tp {max(plans)} x {chip_id}: "
            f"prefill of {d.input_len:g} tokens {prefill:.3g} s (TTFT limit {d.ttft_limit_s:g} s), "
            f"one decode step {decode:.3g} s (TPOT limit {d.tpot_limit_s:g} s)"
        )
    models = {tp: ServingModel(r, d.input_len, d.output_len, max_batch=auto_batch(r, d.input_len, d.output_len))
              for tp, r in plans.items()}  # fmt: skip
    rates = {
        tp: m.capacity(ttft_limit_s=d.ttft_limit_s, tpot_limit_s=d.tpot_limit_s) for tp, m in models.items()
    }
    checks: dict[int, dict[str, Any]] = {}
    while True:  # the width serving most per chip, checked; one that fails its check may drop back
        tp = max(rates, key=lambda t: rates[t] / plans[t].plan.chips)
        if tp in checks or not check:
            break
        rates[tp], checks[tp] = _checked_rate(plans[tp], models[tp], d, rates[tp])
    rate, replica = rates[tp], plans[tp]
    if rate <= 0:
        raise TapeoutError(
            f"no request rate meets p99 TTFT <= {d.ttft_limit_s:g} s and p99 TPOT <= {d.tpot_limit_s:g} s "
            f"on tp {tp} x {chip_id}"
        )
    return Capacity(chips=replica.plan.chips, units_per_s=rate * d.output_len,
                    plan={"tp": tp, "ep": replica.plan.ep, "requests_per_s_per_replica": rate,
                          **checks.get(tp, {"capacity_from": "model"})})  # fmt: skip


@cache
def recsys_capacity(d: RecsysDemand, chip_id: str) -> Capacity:
    """Samples/s of the smallest group of chips that holds the tables, at the p99 limit."""
    from tapeout.sim.recsys_api import recsys

    last = ""
    for chips in _powers(MAX_RECSYS_GROUP):
        try:
            out = recsys(d.model, chip_id, chips, latency_limit_s=d.latency_limit_s,
                         pairs_per_sample=d.pairs_per_sample, precision=d.precision)  # fmt: skip
        except TapeoutError as exc:
            last = str(exc)
            if "hold" in last:  # the tables do not fit: try a larger group
                continue
            raise
        if out["samples_per_s"] <= 0:
            raise TapeoutError(f"no rate meets the p99 latency limit of {d.latency_limit_s:g} s")
        return Capacity(chips=chips, units_per_s=out["samples_per_s"],
                        plan={"group_chips": chips, "sharding": out["sharding"]})  # fmt: skip
    raise TapeoutError(f"the embedding tables do not fit in {MAX_RECSYS_GROUP} chips: {last}")


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


@cache
def training_capacity(d: TrainingDemand, chip_id: str) -> Capacity:
    """The smallest cluster (in data-parallel steps of the best plan's model-parallel group) that
    trains `d.tokens` within the deadline."""
    from tapeout.perf.system import System
    from tapeout.sim.train import train_step
    from tapeout.sim.train_api import TRAINING_PRECISIONS
    from tapeout.sim.train_search import search
    from tapeout.workloads.llm import LLMConfig
    from tapeout.workloads.models import resolve_model

    config = resolve_model(d.model, d.name, None)
    if not isinstance(config, LLMConfig):
        raise TapeoutError(f"demand {d.name!r}: field 'model': {d.model!r} is not a language model")
    if d.precision not in TRAINING_PRECISIONS:
        raise TapeoutError(
            f"demand {d.name!r}: field 'precision': {d.precision!r}; known: {', '.join(TRAINING_PRECISIONS)}"
        )
    chip = get_chip(chip_id)
    need = d.tokens / (d.deadline_days * 86400)
    precision = cast(Precision, d.precision)
    reference = TRAIN_REFERENCE_NODES * chip.node.chips_per_node
    found = None
    last = ""
    for size in (reference, 4 * reference, 16 * reference):
        try:
            found = search(config, System.of(chip, size), seq_len=d.seq_len, global_batch=d.global_batch,
                           precision=precision, budget=TRAIN_SEARCH_BUDGET).best  # fmt: skip
            break
        except TapeoutError as exc:
            last = str(exc)
    if found is None:
        raise TapeoutError(f"no training plan fits on up to {16 * reference} x {chip_id}: {last}")
    estimate = need / (found.tokens_per_s / size)
    if estimate < size / 2:  # a smaller cluster will do: search again at about its size
        small = 2 ** math.ceil(math.log2(max(1.0, estimate)))
        with contextlib.suppress(TapeoutError):  # else the plan of the reference size stands
            found = search(config, System.of(chip, small), seq_len=d.seq_len, global_batch=d.global_batch,
                           precision=precision, budget=TRAIN_SEARCH_BUDGET).best  # fmt: skip
    plan = replace(found.plan, dp=None)
    group = plan.tp * plan.pp * plan.cp
    best_dp = 0
    for dp in _divisors(d.global_batch // plan.micro_batch):
        if dp * group < estimate:
            continue
        try:
            r = train_step(config, System.of(chip, dp * group), plan, seq_len=d.seq_len,
                           global_batch=d.global_batch)  # fmt: skip
        except TapeoutError:
            continue
        best_dp = dp
        if r.tokens_per_s >= need:
            days = d.tokens / r.tokens_per_s / 86400
            return Capacity(chips=dp * group, units_per_s=r.tokens_per_s, divisible=False,
                            plan={**r.as_dict()["plan"], "run_days": days})  # fmt: skip
    raise TapeoutError(
        f"the deadline of {d.deadline_days:g} days needs {need:,.0f} tokens/s; with a global batch of "
        f"{d.global_batch} sequences the fastest plan found "
        f"(tp {plan.tp} pp {plan.pp} cp {plan.cp}, up to dp {best_dp or 'n/a'}) does not reach it"
    )


def capacity(d: Demand, chip_id: str, check: bool = True) -> Capacity:
    """One group's capacity for a demand on a chip (cached); a serving one from the model alone
    when not `check`."""
    if isinstance(d, ServingDemand):
        return serving_capacity(d, chip_id, check)
    if isinstance(d, RecsysDemand):
        return recsys_capacity(d, chip_id)
    return training_capacity(d, chip_id)


def _capacity_or_error(task: tuple[Demand, str, bool]) -> Capacity | str:
    try:
        return capacity(*task)
    except TapeoutError as exc:
        return str(exc)


def capacities(
    tasks: list[tuple[Demand, str]], workers: int = 1, *, check: bool = True
) -> list[Capacity | str]:
    """`capacity` of every (demand, chip id), or the reason it fails; over `workers` processes
    (forked, so each starts with the catalogs loaded) when there is more than one task."""
    jobs = [(d, chip, check) for d, chip in tasks]
    if workers <= 1 or len(jobs) < 2:
        return [_capacity_or_error(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # The slowest kinds first (serving, then training), so that the workers finish together.
    slow = {"serving": 0, "training": 1, "recsys": 2}
    order = sorted(range(len(jobs)), key=lambda i: slow[jobs[i][0].kind])
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
        done = list(pool.map(_capacity_or_error, [jobs[i] for i in order]))
    out: list[Capacity | str] = [""] * len(jobs)
    for i, result in zip(order, done, strict=True):
        out[i] = result
    return out


def demand_rate(d: Demand, known: Capacity | None = None) -> float:
    """What the demand asks for, in its capacity unit (see UNITS); `known`: the capacity of the
    `capacity_of` hardware, when already found."""
    if isinstance(d, ServingDemand):
        if d.tokens_per_s is not None:
            return d.tokens_per_s
        if d.requests_per_s is not None:
            return d.requests_per_s * d.output_len
        assert d.capacity_of is not None
        try:
            cap = known or serving_capacity(d, d.capacity_of.hardware)
        except TapeoutError as exc:
            raise TapeoutError(
                f"demand {d.name!r}: field 'capacity_of': {d.capacity_of.hardware}: {exc}"
            ) from None
        return cap.per_chip * d.capacity_of.chips
    if isinstance(d, RecsysDemand):
        return d.qps
    return d.tokens / (d.deadline_days * 86400)


# ---- prices --------------------------------------------------------------------------------
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
    from tapeout.cost.unit import unit_cost

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


# ---- optimisation --------------------------------------------------------------------------
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

    >>> groups_needed(1000.0, Capacity(chips=2, units_per_s=300.0, plan={}))
    4
    """
    return 1 if not cap.divisible else max(1, math.ceil(rate / cap.units_per_s - 1e-9))


def allocate(
    rates: dict[str, float], options: dict[str, list[Option]], caps: dict[str, float]
) -> dict[str, dict[str, int]]:
    """Groups of each candidate per demand: cheapest per unit first, caps shared, demands in order
    of regret. Raises when the caps leave a demand short.

    >>> cap = Capacity(chips=1, units_per_s=10.0, plan={})
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


# ---- the plan ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class FleetPlan:
    """The result of `plan`: a JSON-ready mapping in `data`, with `total_tco_usd`."""

    data: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tco_usd(self) -> float:
        return float(self.data["total_tco_usd"])


def _work_price(d: Demand, chips: int, p_hour: float, cap: Capacity | None, rate: float) -> float:
    """Dollars per unit of work of a fleet of `chips` chips costing `p_hour` dollars per chip-hour."""
    kind = d.kind
    if kind == "training":
        assert cap is not None
        return chips * p_hour * float(cap.plan["run_days"]) * 24  # one run: its chips for its duration
    per = UNITS[kind][1]
    assert per is not None
    return chips * p_hour / (rate * 3600) * per


def _break_even(
    d: Demand, o: Option, rate: float, target_usd: float, p: Priced, a: TcoAssumptions
) -> dict[str, Any]:
    """The volume at which an in-house design's fleet for `d` costs `target_usd`."""
    chips = groups_needed(rate, o.cap) * o.cap.chips

    def fleet_usd(volume: float) -> float:
        unit, _ = in_house_price(p.chip, max(1, round(volume)))
        return chips * chip_tco(unit * (1 + p.candidate.levy), p.chip.tdp_w, a).total_usd

    _, nre = in_house_price(p.chip, 1)
    base = {"candidate": p.key, "fleet_chips": chips, "nre_usd": nre, "bought_fleet_tco_usd": target_usd}
    if fleet_usd(BREAK_EVEN_MAX_VOLUME) > target_usd:
        return {**base, "volume": None, "note": "never: costs more even with the NRE spread to nothing"}
    lo, hi = 0.0, math.log10(BREAK_EVEN_MAX_VOLUME)
    if fleet_usd(1) <= target_usd:
        return {**base, "volume": 1}
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fleet_usd(10**mid) <= target_usd else (mid, hi)
    volume = math.ceil(10**hi)
    return {**base, "volume": volume, "covered_by_this_fleet": volume <= chips}


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
            if o.cap.plan.get("capacity_from") != "model":
                continue
            named = d.capacity_of is not None and chips[o.candidate].id == d.capacity_of.hardware
            if o.candidate in s.alloc[d.name] or named or o.usd_per_unit <= cheapest * (1 + CHECK_MARGIN):
                out.add((d.name, o.candidate))
    return out


def plan(demand: DemandFile, workers: int = 1) -> FleetPlan:
    """The fleet of lowest TCO (by the greedy of `allocate`) that meets every demand.

    >>> from tapeout.plan.demand import parse_demand
    >>> f = plan(parse_demand({"candidates": [{"hardware": "h100-sxm"}, {"hardware": "h20"}],
    ...     "demands": [{"kind": "recsys", "name": "rank", "model": "dlrm-v2", "qps": 1e6,
    ...                  "latency_limit_s": 0.01, "pairs_per_sample": 100}]}))
    >>> f.total_tco_usd > 0, [c["candidate"] for c in f.data["chips"]]
    (True, ['h100-sxm'])
    """
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
    caps, errors, rates = sol.caps, sol.errors, sol.rates
    prices, options, alloc = sol.prices, sol.options, sol.alloc

    per_chip: dict[str, dict[str, Any]] = {}
    rows = []
    for d in demand.demands:
        unit, _, price_key = UNITS[d.kind]
        fleet: list[dict[str, Any]] = []
        total_chips, total_usd, hour_usd = 0, 0.0, 0.0
        for key, groups in alloc[d.name].items():
            cap, p = caps[d.name, key], prices[key]
            n = groups * cap.chips
            fleet.append({"candidate": key, "chips": n, "groups": groups, "tco_usd": n * p.tco.total_usd,
                          "capacity": groups * cap.units_per_s, "plan": cap.plan})  # fmt: skip
            total_chips += n
            total_usd += n * p.tco.total_usd
            hour_usd += n * p.tco.usd_per_hour
            row = per_chip.setdefault(key, {"candidate": key, "hardware": p.chip.id, "chips": 0,
                                            "tco_usd": 0.0, "demands": {}})  # fmt: skip
            row["chips"] += n
            row["tco_usd"] += n * p.tco.total_usd
            row["demands"][d.name] = n
        only = caps[d.name, fleet[0]["candidate"]] if len(fleet) == 1 else None
        alternatives: list[dict[str, Any]] = []
        for c in demand.candidates:
            p = prices[c.key]
            if (d.name, c.key) not in caps:
                alternatives.append({"candidate": c.key, "error": errors[d.name, c.key]})
                continue
            cap = caps[d.name, c.key]
            n = groups_needed(rates[d.name], cap) * cap.chips
            alternatives.append({
                "candidate": c.key, "chips": n, "tco_usd": n * p.tco.total_usd,
                price_key: _work_price(d, n, p.tco.usd_per_hour, cap, rates[d.name]),
                "capacity_per_chip": cap.per_chip, "plan": cap.plan, "within_cap": n <= p.cap,
            })  # fmt: skip
        bought = [x for x in alternatives if "chips" in x and not prices[x["candidate"]].in_house]
        break_even = []
        if bought:
            cheapest = min(bought, key=lambda x: x["tco_usd"])
            for o in options[d.name]:
                if prices[o.candidate].in_house:
                    be = _break_even(d, o, rates[d.name], cheapest["tco_usd"], prices[o.candidate], a)
                    break_even.append({**be, "against": cheapest["candidate"]})
        rows.append({
            "demand": d.name, "kind": d.kind, "rate": rates[d.name], "unit": unit,
            "chips": total_chips, "tco_usd": total_usd,
            price_key: _work_price(d, total_chips, hour_usd / total_chips, only, rates[d.name])
            if d.kind != "training" or only else None,
            "fleet": fleet, "alternatives": alternatives, "break_even": break_even,
        })  # fmt: skip
    total = sum(r["tco_usd"] for r in per_chip.values())
    return FleetPlan(data={
        "total_tco_usd": total,
        "total_chips": sum(r["chips"] for r in per_chip.values()),
        "tco_assumptions": asdict(a),
        "candidates": [prices[c.key].as_dict() for c in demand.candidates],
        "demands": rows,
        "chips": list(per_chip.values()),
    })  # fmt: skip
