"""Validation: predict every case of a `tapeout-validation/1` file and report the errors.

Each kind has one predictor, registered in `PREDICTORS`; a kind without one is reported
`unsupported` with its reason and counts as a miss (a 100 % error in MAPE, outside every band),
never dropped. The summary is per kind and per confidence, as the schema says.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapeout.cases import (
    PUBLIC_CASES,
    AttentionParams,
    Case,
    CollectiveParams,
    GemmParams,
    RecsysInferenceParams,
    RecsysTrainingParams,
    Software,
    load_cases,
)
from tapeout.errors import TapeoutError
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf import System, op_cost
from tapeout.perf.attention import schema_attention_flops
from tapeout.perf.calibration import Calibration, SoftwareRef, profile_for
from tapeout.search import recsys as recsys_search
from tapeout.search import serving as serving_search
from tapeout.sim import recsys as recsys_sim
from tapeout.sim import scenarios
from tapeout.sim.llm import Replica
from tapeout.sim.train import train_step
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.ops import COLLECTIVES, Attention, Elementwise, Matmul
from tapeout.workloads.recsys import RecsysConfig

__all__ = ["PUBLIC_CASES", "Case", "CaseResult", "load_cases", "predict", "predict_all", "report", "run"]


# ---- predictors ---------------------------------------------------------------------------
class Unsupported(Exception):
    """This tool cannot predict the case yet; the message says why."""


Predictor = Callable[[Case, System], float]
PREDICTORS: dict[str, Predictor] = {}
# The time budget of one case's serving simulations, as estimated before they start: the public
# cases' come to under half a second; a case past it (a batch or lengths mistyped by orders of
# magnitude) is refused, not run.
CASE_SECONDS = 5.0


def predictor(kind: str) -> Callable[[Predictor], Predictor]:
    def register(fn: Predictor) -> Predictor:
        PREDICTORS[kind] = fn
        return fn

    return register


def _single_chip(case: Case) -> None:
    if case.chips != 1:
        raise TapeoutError(f"{case.id}: field 'chips': kind {case.kind} runs on one chip, got {case.chips}")


@predictor("gemm")
def _gemm(case: Case, system: System) -> float:
    _single_chip(case)
    p: GemmParams = case.params
    cost = op_cost(Matmul(m=p.m, n=p.n, k=p.k, groups=p.groups, precision=case.precision), system)
    return 2.0 * p.m * p.n * p.k * p.groups / cost.time_s / 1e12


@predictor("attention")
def _attention(case: Case, system: System) -> float:
    _single_chip(case)
    p: AttentionParams = case.params
    fwd = Attention(
        batch=p.batch, q_len=p.seq_len, kv_len=p.seq_len, heads=p.heads,
        kv_heads=p.kv_heads or p.heads, head_dim=p.head_dim, causal=p.causal, precision=case.precision,
    )  # fmt: skip
    time = op_cost(fwd, system).time_s
    if p.pass_ == "fwd_bwd":
        time += op_cost(dataclasses.replace(fwd, backward=True), system).time_s
    flops = schema_attention_flops(p.batch, p.seq_len, p.heads, p.head_dim, p.causal, p.pass_ == "fwd_bwd")
    return flops / time / 1e12


STREAM_ELEMENTS = 2**27  # 1 GiB arrays of 8-byte elements: far larger than any on-chip cache
_PATTERNS = {"triad": (2, 1, 2.0), "copy": (1, 1, 0.0), "read": (1, 0, 1.0)}


@predictor("memory")
def _memory(case: Case, system: System) -> float:
    _single_chip(case)
    reads, writes, flops = _PATTERNS[case.params.pattern]
    # Bandwidth kernels move bytes, not values: the schema's precision is a placeholder, so the
    # arrays are fp32 pairs (8 bytes per element, as STREAM's doubles).
    op = Elementwise(elements=2 * STREAM_ELEMENTS, reads=reads, writes=writes, flops_per_element=flops / 2,
                     precision="fp32")  # fmt: skip
    cost = op_cost(op, system)
    return op.bytes / cost.time_s / 1e9


LARGE_MESSAGE_BYTES = 2**30  # when a case gives no size: the bandwidth-bound regime


@predictor("collective")
def _collective(case: Case, system: System) -> float:
    p: CollectiveParams = case.params
    if case.chips < 2:
        raise TapeoutError(f"{case.id}: field 'chips': a collective needs at least 2 chips, got {case.chips}")
    size = p.bytes or LARGE_MESSAGE_BYTES
    op = COLLECTIVES[p.op](ranks=case.chips, bytes_per_rank=size, algorithm=p.algorithm)
    cost = op_cost(op, system)
    if case.metric == "time_s":
        return cost.time_s
    return size * op.bus_factor / cost.time_s / 1e9


@predictor("llm_inference")
def _llm_inference(case: Case, system: System) -> float:
    p: Any = case.params
    if not isinstance(case.model, LLMConfig):
        raise TapeoutError(f"{case.id}: field 'model': kind llm_inference needs a language model")
    model = case.model if p.layers is None else case.model.with_layers(p.layers)
    plan = case.plan
    assert isinstance(plan, InferencePlan)
    replicas = plan.replicas(model, case.chips, case.chip.id)
    sub = System.of(case.chip, plan.chips, chips_per_node=case.chips_per_node,
                    scale_out_gbit_s_per_chip=case.scale_out_gbit_s_per_chip, calibration=system.cal)  # fmt: skip
    replica = Replica.of(model, sub, plan, layers_only=p.layers is not None)
    out = p.output_len
    if p.scenario == "fixed_batch":
        result = scenarios.fixed_batch(replica, p.input_len, out, batch=p.batch or 1, replicas=replicas)
    elif out is None:
        raise TapeoutError(f"{case.id}: field 'params.output_len': scenario {p.scenario} needs it (tokens)")
    elif p.scenario == "offline":
        result = scenarios.offline(replica, p.input_len, out, batch=p.batch, replicas=replicas,
                                   max_seconds=CASE_SECONDS)  # fmt: skip
    else:
        if p.ttft_limit_s is None or p.tpot_limit_s is None:
            raise TapeoutError(f"{case.id}: fields 'params.ttft_limit_s' and 'params.tpot_limit_s': "
                               "scenario server needs both (seconds)")  # fmt: skip
        result = serving_search.server(replica, p.input_len, out, ttft_limit_s=p.ttft_limit_s,
                                       tpot_limit_s=p.tpot_limit_s, batch=p.batch, replicas=replicas,
                                       max_seconds=CASE_SECONDS)  # fmt: skip
    return {"tokens_per_s": result.tokens_per_s, "tpot_s": result.tpot_s, "ttft_s": result.ttft_s}[
        case.metric
    ]


def training_setup(case: Case) -> tuple[LLMConfig, TrainingPlan]:
    """The model (with the `layers` override) and the plan an `llm_training` case states."""
    if not isinstance(case.model, LLMConfig) or not isinstance(case.plan, TrainingPlan):
        raise TapeoutError(f"{case.id}: field 'model': kind llm_training needs a language model")
    layers = case.params.layers
    return (case.model if layers is None else case.model.with_layers(layers)), case.plan


def training_prediction(case: Case, system: System, plan: TrainingPlan | None = None) -> float:
    """The case's metric for its stated plan, or for `plan` (what-ifs on the same case)."""
    p: Any = case.params
    model, stated = training_setup(case)
    result = train_step(model, system, plan or stated, seq_len=p.seq_len, global_batch=p.global_batch,
                        layers_only=p.layers is not None, check_memory=False)  # fmt: skip
    return {"step_time_s": result.step_time_s, "tokens_per_s": result.tokens_per_s}[case.metric]


@predictor("llm_training")
def _llm_training(case: Case, system: System) -> float:
    return training_prediction(case, system)


@predictor("recsys_inference")
def _recsys_inference(case: Case, system: System) -> float:
    p: RecsysInferenceParams = case.params
    if not isinstance(case.model, RecsysConfig):
        raise TapeoutError(f"{case.id}: field 'model': kind recsys_inference needs a recommendation model")
    prec: Any = case.precision
    rs = recsys_sim.RecsysSystem.of(case.model, system, RecsysPlan(precision=prec))
    batch = round(p.batch * p.pairs_per_sample) if p.batch else None
    if p.scenario == "server":
        if p.latency_limit_s is None:
            raise TapeoutError(
                f"{case.id}: field 'params.latency_limit_s': scenario server needs it (seconds)"
            )
        result = recsys_search.server(rs, latency_limit_s=p.latency_limit_s, pairs_per_sample=p.pairs_per_sample,
                               batch_pairs=batch)  # fmt: skip
    else:
        result = recsys_sim.offline(rs, pairs_per_sample=p.pairs_per_sample, batch_pairs=batch)
    return result.samples_per_s


@predictor("recsys_training")
def _recsys_training(case: Case, system: System) -> float:
    p: RecsysTrainingParams = case.params
    if not isinstance(case.model, RecsysConfig):
        raise TapeoutError(f"{case.id}: field 'model': kind recsys_training needs a recommendation model")
    prec: Any = case.precision
    rs = recsys_sim.RecsysSystem.of(case.model, system, RecsysPlan(precision=prec), training=True)
    return recsys_sim.train_step(rs, p.global_batch).samples_per_s


# ---- running and reporting -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CaseResult:
    id: str
    kind: str
    metric: str
    measured: float
    predicted: float | None
    reason: str | None = None
    confidence: str = "confirmed"
    software: str = ""  # name[@version] (date), for the table; not part of the JSON schema

    @property
    def error(self) -> float | None:
        if self.predicted is None:
            return None
        return (self.predicted - self.measured) / self.measured

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "metric": self.metric, "measured": self.measured,
            "predicted": self.predicted, "error": self.error,
        }  # fmt: skip
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _software_label(s: Software | None) -> str:
    if s is None:
        return ""
    return s.name + (f"@{s.version}" if s.version else "") + (f" ({s.date})" if s.date else "")


def predict(case: Case, calibration: Calibration | None = None) -> CaseResult:
    def result(value: float | None, reason: str | None = None) -> CaseResult:
        return CaseResult(case.id, case.kind, case.metric, case.value, value, reason, case.confidence,
                          _software_label(case.software))  # fmt: skip

    fn = PREDICTORS.get(case.kind)
    if fn is None:
        return result(None, f"no predictor for kind {case.kind}")
    try:
        value = fn(case, case.system(calibration))
    except Unsupported as exc:
        return result(None, str(exc))
    except TapeoutError as exc:  # a plan or model the tool finds impossible: a miss, with why
        return result(None, f"cannot predict: {exc}")
    if not math.isfinite(value) or value <= 0:
        raise AssertionError(f"{case.id}: predictor returned {value}")
    return result(value)


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    def ape(r: CaseResult) -> float:
        return 1.0 if r.error is None else abs(r.error)

    def within(limit: float) -> float:
        return sum(1 for r in results if r.error is not None and abs(r.error) <= limit) / len(results)

    def by(key: Callable[[CaseResult], str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for value in dict.fromkeys(key(r) for r in results):
            rs = [r for r in results if key(r) == value]
            entry: dict[str, Any] = {"mape": sum(ape(r) for r in rs) / len(rs), "n": len(rs)}
            missing = sum(1 for r in rs if r.predicted is None)
            if missing:
                entry["unsupported"] = missing
            out[value] = entry
        return out

    return {
        "mape": sum(ape(r) for r in results) / len(results),
        "within_10pct": within(0.10),
        "within_25pct": within(0.25),
        "n": len(results),
        "unsupported": sum(1 for r in results if r.predicted is None),
        "by_kind": by(lambda r: r.kind),
        "by_confidence": by(lambda r: r.confidence),
    }


def with_software(cases: list[Case], software: SoftwareRef | None) -> list[Case]:
    """The cases as run under `software` instead of their own, at their own dates (a what-if:
    `validate --software`); None leaves them as they are."""
    if software is None:
        return cases
    return [
        dataclasses.replace(case, software=Software(name=software.name, version=software.version,
                                                    date=case.software.date if case.software else None))
        for case in cases
    ]  # fmt: skip


def software_notes(cases: list[Case]) -> list[str]:
    """What a run must say once about the cases' software: each name the calibration does not
    take as given, with the figures used instead and how many cases it covers."""
    notes: dict[str, list[str]] = {}
    for case in cases:
        profile = profile_for(case.chip.family, case.software, case.workload)
        if profile.note and case.software is not None:
            notes.setdefault(f"software {profile.asked!r}: {profile.note}", []).append(case.id)
    return [f"{note} ({len(ids)} case(s): {', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
            for note, ids in notes.items()]  # fmt: skip


def predict_all(path: Path, calibration: Calibration | None = None) -> list[CaseResult]:
    """Predict every case of a file, in file order."""
    return [predict(c, calibration) for c in load_cases(path)]


def report(results: list[CaseResult]) -> dict[str, Any]:
    """`{"cases": [...], "summary": {...}}` exactly as the schema says."""
    return {"cases": [r.as_dict() for r in results], "summary": summarize(results)}


def run(path: Path, calibration: Calibration | None = None) -> dict[str, Any]:
    """Predict every case of a file: `{"cases": [...], "summary": {...}}` as the schema says."""
    return report(predict_all(path, calibration))
