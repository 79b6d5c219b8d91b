"""What one group of chips does for one demand: the capacity the fleet is built from.

- serving: output tokens/s of one replica at the p99 TTFT and TPOT limits. The replica is the
  tensor-parallel width (a power of two within the scale-up domain; experts spread as wide)
  that serves the most per chip among the smallest that fits (weights plus one request's KV
  cache) and the next two doublings. Each width's rate comes from the steady-state model of
  continuous batching (`sim.capacity`, milliseconds); `check` confirms the best one with a
  short simulation (`search.serving.checked_rate`).
- recsys: samples/s of the smallest group of chips (1, 2, 4, ...) that holds the tables, at the
  p99 latency limit (`search.recsys`).
- training: the chips that finish `tokens` by the deadline: the fastest plan at a reference size
  (the training plan search, bounded), then that plan's data-parallel width grown until the run
  meets the deadline (each size timed by the training step model).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import tapeout.api as api
from tapeout.errors import DoesNotFit, TapeoutError
from tapeout.hardware.catalog import get_chip
from tapeout.hardware.spec import ChipSpec
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.calibration import generation
from tapeout.perf.system import System
from tapeout.plan.demand import Demand, RecsysDemand, ServingDemand, TrainingDemand
from tapeout.search.serving import checked_rate
from tapeout.search.training import search
from tapeout.sim.capacity import ServingModel
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.scenarios import auto_batch
from tapeout.sim.train import TrainingResult, train_step
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model

SERVING_WIDTHS = 3  # tensor-parallel widths modelled: the smallest that fits, and two doublings
CHECK_TOLERANCE = 0.15  # how far the check run's p99 may exceed a limit: a short run's p99 scatters this much
MAX_RECSYS_GROUP = 64  # chips: the largest group tried for holding the embedding tables
TRAIN_SEARCH_BUDGET = 2000  # plans the training search may time at the reference size
TRAIN_REFERENCE_NODES = 8  # the reference size of the training search, in nodes

UNITS = {  # per demand kind: the unit of capacity, and how work is priced
    "serving": ("output tokens/s", 1e6, "usd_per_million_tokens"),
    "recsys": ("samples/s", 1e3, "usd_per_thousand_samples"),
    "training": ("tokens/s", None, "usd_per_run"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """Where a serving rate comes from: the model alone, the model confirmed by a simulated run,
    or a simulated bisection; with the p99s the accepted run saw."""

    source: str
    p99_ttft_s: float | None = None
    p99_tpot_s: float | None = None

    @property
    def simulated(self) -> bool:
        return self.source != "model"


@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    """What one group of `chips` chips (a replica, a recsys group, a training cluster) does."""

    chips: int
    units_per_s: float
    plan: InferencePlan | RecsysPlan | TrainingPlan
    divisible: bool = True  # False: the group must take the whole demand (a training run)
    check: Check | None = None  # serving: where the rate comes from
    requests_per_s: float | None = None  # serving: per replica
    sharding: str | None = None  # recsys: the tables' placement
    training: TrainingResult | None = None  # training: the step at this size
    run_days: float | None = None  # training: how long the run takes

    @property
    def per_chip(self) -> float:
        return self.units_per_s / self.chips

    def plan_dict(self) -> dict[str, Any]:
        """The plan as the planner's JSON shows it."""
        if isinstance(self.plan, InferencePlan):
            out: dict[str, Any] = {"tp": self.plan.tp, "ep": self.plan.ep,
                                   "requests_per_s_per_replica": self.requests_per_s}  # fmt: skip
            if self.check is not None:
                out["capacity_from"] = self.check.source
                if self.check.p99_ttft_s is not None:
                    out["simulated_p99_ttft_s"] = self.check.p99_ttft_s
                    out["simulated_p99_tpot_s"] = self.check.p99_tpot_s
            return out
        if isinstance(self.plan, RecsysPlan):
            return {"group_chips": self.chips, "sharding": self.sharding}
        assert self.training is not None
        return {**self.training.as_dict()["plan"], "run_days": self.run_days}


def _powers(limit: int) -> list[int]:
    return [2**i for i in range(int(math.log2(max(1, limit))) + 1)]


def _llm(d: ServingDemand | TrainingDemand) -> LLMConfig:
    config = resolve_model(d.model, d.name, None)
    if not isinstance(config, LLMConfig):
        raise TapeoutError(f"demand {d.name!r}: field 'model': {d.model!r} is not a language model")
    return config


def _widths(d: ServingDemand, chip: ChipSpec) -> list[tuple[int, Replica]]:
    """(tp, replica) for the smallest width that fits and the next ones up (SERVING_WIDTHS in all)."""
    config = _llm(d)
    domain = chip.node.scale_up_domain_chips if chip.scale_up else 1
    fits: list[tuple[int, Replica]] = []
    last = ""
    for tp in _powers(domain):
        ep = tp if config.is_moe and config.experts % tp == 0 else 1
        try:
            plan = replace(d.plan, tp=tp, ep=ep)
            replica, _, _ = api.replica(config, chip.id, tp, plan)
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


def _alone(d: ServingDemand, chip_id: str, plans: dict[int, Replica]) -> None:
    """Refuse limits no rate can meet: one request alone already misses them on every width."""
    for replica in plans.values():
        prompt = round(d.input_len)
        prefill = replica.step_time(Batch(prefill_tokens=prompt, prefill_seqs=1, prefill_context=prompt))
        decode = replica.step_time(Batch(decode_seqs=1, decode_context=round(d.input_len + d.output_len)))
        if prefill <= d.ttft_limit_s and decode <= d.tpot_limit_s:
            return
    raise TapeoutError(
        f"latency limits not met even by one request alone on tp {max(plans)} x {chip_id}: "
        f"prefill of {d.input_len:g} tokens {prefill:.3g} s (TTFT limit {d.ttft_limit_s:g} s), "
        f"one decode step {decode:.3g} s (TPOT limit {d.tpot_limit_s:g} s)"
    )


def serving_capacity(d: ServingDemand, chip_id: str, check: bool = True) -> Capacity:
    """Output tokens/s of one replica of `d.model` on `chip_id` at the demand's latency limits;
    from the model alone when not `check`. Cached under the figures in force."""
    return _serving_capacity(d, chip_id, check, generation())


@cache
def _serving_capacity(d: ServingDemand, chip_id: str, check: bool, _figures: int) -> Capacity:
    plans = dict(_widths(d, get_chip(chip_id)))
    _alone(d, chip_id, plans)
    models = {tp: ServingModel(r, d.input_len, d.output_len, max_batch=auto_batch(r, d.input_len, d.output_len))
              for tp, r in plans.items()}  # fmt: skip
    rates = {
        tp: m.capacity(ttft_limit_s=d.ttft_limit_s, tpot_limit_s=d.tpot_limit_s) for tp, m in models.items()
    }
    checks: dict[int, Check] = {}
    while True:  # the width serving most per chip, checked; one that fails its check may drop back
        tp = max(rates, key=lambda t: rates[t] / plans[t].plan.chips)
        if tp in checks or not check:
            break
        rate, seen = checked_rate(plans[tp], models[tp], d.input_len, d.output_len, ttft_limit_s=d.ttft_limit_s,
                                  tpot_limit_s=d.tpot_limit_s, rate=rates[tp], tolerance=CHECK_TOLERANCE)  # fmt: skip
        rates[tp] = rate
        checks[tp] = Check(source=seen.get("capacity_from", "simulation"),
                           p99_ttft_s=seen.get("simulated_p99_ttft_s"), p99_tpot_s=seen.get("simulated_p99_tpot_s"))  # fmt: skip
    rate, replica = rates[tp], plans[tp]
    if rate <= 0:
        raise TapeoutError(
            f"no request rate meets p99 TTFT <= {d.ttft_limit_s:g} s and p99 TPOT <= {d.tpot_limit_s:g} s "
            f"on tp {tp} x {chip_id}"
        )
    return Capacity(chips=replica.plan.chips, units_per_s=rate * d.output_len, plan=replica.plan,
                    check=checks.get(tp, Check(source="model")), requests_per_s=rate)  # fmt: skip


def recsys_capacity(d: RecsysDemand, chip_id: str) -> Capacity:
    """Samples/s of the smallest group of chips that holds the tables, at the p99 limit. Cached
    under the figures in force."""
    return _recsys_capacity(d, chip_id, generation())


@cache
def _recsys_capacity(d: RecsysDemand, chip_id: str, _figures: int) -> Capacity:
    last = ""
    plan = d.plan
    for chips in _powers(MAX_RECSYS_GROUP):
        try:
            out = api.recsys(d.model, chip_id, chips, plan, latency_limit_s=d.latency_limit_s,
                             pairs_per_sample=d.pairs_per_sample)  # fmt: skip
        except DoesNotFit as exc:  # the tables do not fit: try a larger group
            last = str(exc)
            continue
        if out.result.samples_per_s <= 0:
            raise TapeoutError(f"no rate meets the p99 latency limit of {d.latency_limit_s:g} s")
        return Capacity(chips=chips, units_per_s=out.result.samples_per_s, plan=plan, sharding=out.sharding)
    raise TapeoutError(f"the embedding tables do not fit in {MAX_RECSYS_GROUP} chips: {last}")


def _fastest(
    config: LLMConfig, chip: ChipSpec, d: TrainingDemand, need: float
) -> tuple[TrainingResult, float]:
    """The fastest plan at a reference size (and again near the size the demand needs when that
    is much smaller), and the chips the demand needs at that plan's rate per chip."""
    reference = TRAIN_REFERENCE_NODES * chip.node.chips_per_node
    found, size, last = None, reference, ""
    precision = d.plan.precision
    for size in (reference, 4 * reference, 16 * reference):
        try:
            found = search(config, System.of(chip, size), seq_len=d.seq_len, global_batch=d.global_batch,
                           precision=precision, budget=TRAIN_SEARCH_BUDGET).best  # fmt: skip
            break
        except TapeoutError as exc:
            last = str(exc)
    if found is None:
        raise TapeoutError(f"no training plan fits on up to {16 * reference} x {chip.id}: {last}")
    estimate = need / (found.tokens_per_s / size)
    if estimate < size / 2:  # a smaller cluster will do: search again at about its size
        small = 2 ** math.ceil(math.log2(max(1.0, estimate)))
        with contextlib.suppress(TapeoutError):  # else the plan of the reference size stands
            found = search(config, System.of(chip, small), seq_len=d.seq_len, global_batch=d.global_batch,
                           precision=precision, budget=TRAIN_SEARCH_BUDGET).best  # fmt: skip
    return found, estimate


def training_capacity(d: TrainingDemand, chip_id: str) -> Capacity:
    """The smallest cluster (in data-parallel steps of the best plan's model-parallel group) that
    trains `d.tokens` within the deadline. Cached under the figures in force."""
    return _training_capacity(d, chip_id, generation())


@cache
def _training_capacity(d: TrainingDemand, chip_id: str, _figures: int) -> Capacity:
    config, chip = _llm(d), get_chip(chip_id)
    need = d.tokens / (d.deadline_days * 86400)
    found, estimate = _fastest(config, chip, d, need)
    plan = replace(found.plan, dp=None)
    group = plan.tp * plan.pp * plan.cp
    best: tuple[int, float] | None = None  # the fastest data parallelism that ran, and its tokens/s
    widths = [
        k
        for k in range(1, d.global_batch // plan.micro_batch + 1)
        if d.global_batch // plan.micro_batch % k == 0
    ]
    for dp in widths:
        if dp * group < estimate:
            continue
        try:
            r = train_step(
                config, System.of(chip, dp * group), plan, seq_len=d.seq_len, global_batch=d.global_batch
            )
        except TapeoutError:
            continue
        if best is None or r.tokens_per_s > best[1]:
            best = (dp, r.tokens_per_s)
        if r.tokens_per_s >= need:
            return Capacity(chips=dp * group, units_per_s=r.tokens_per_s, divisible=False, plan=plan, training=r,
                            run_days=d.tokens / r.tokens_per_s / 86400)  # fmt: skip
    for dp in reversed(widths if best is None else []):  # the batch caps dp below the chips needed
        try:
            r = train_step(
                config, System.of(chip, dp * group), plan, seq_len=d.seq_len, global_batch=d.global_batch
            )
        except TapeoutError:
            continue
        best = (dp, r.tokens_per_s)
        break
    if best is None:
        reached = f"no data-parallel width from {estimate:,.0f} chips up fits the global batch and memory"
    else:
        dp, rate = best
        reached = (f"at best {rate:,.0f} tokens/s ({100 * rate / need:.0f} % of the need, dp {dp} on "
                   f"{dp * group:,} chips, {d.tokens / rate / 86400:,.0f} days)")  # fmt: skip
    raise TapeoutError(
        f"the deadline of {d.deadline_days:g} days needs {need:,.0f} tokens/s; with a global batch of "
        f"{d.global_batch} sequences the fastest plan found (tp {plan.tp} pp {plan.pp} cp {plan.cp}) "
        f"reaches {reached}"
    )


def capacity(d: Demand, chip_id: str, check: bool = True) -> Capacity:
    """One group's capacity for a demand on a chip (cached); a serving one from the model alone
    when not `check`."""
    if isinstance(d, ServingDemand):
        return serving_capacity(d, chip_id, check)
    if isinstance(d, RecsysDemand):
        return recsys_capacity(d, chip_id)
    return training_capacity(d, chip_id)


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
