"""Validation cases (schema `tapeout-validation/1`): load, predict, and report the errors.

A case file is parsed in full before anything is predicted, so a bad case stops the run with
an error naming the file, the case and the field. Each kind has one predictor, registered in
`PREDICTORS`; a kind without one is reported `unsupported` with its reason and counts as a
miss (a 100 % error in MAPE, outside every band), never dropped.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError, from_validation, require_mapping
from tapeout.hardware.catalog import resolve_chip
from tapeout.hardware.spec import ChipSpec, Frozen, Precision
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf import System, op_cost
from tapeout.perf.attention import schema_attention_flops
from tapeout.perf.calibration import Calibration
from tapeout.sim import recsys, scenarios
from tapeout.sim.llm import Replica
from tapeout.sim.train import train_step
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import ModelConfig, resolve_model
from tapeout.workloads.ops import COLLECTIVES, Attention, Elementwise, Matmul
from tapeout.workloads.recsys import RecsysConfig

SCHEMA = "tapeout-validation/1"
PUBLIC_CASES = Path(__file__).parent / "data" / "public_cases.yaml"
PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
EARLIEST_SOFTWARE = "2015-01"  # no accelerator software older than this is a case


# ---- the schema ---------------------------------------------------------------------------
class GemmParams(Frozen):
    m: PosInt
    n: PosInt
    k: PosInt
    groups: PosInt = 1


class AttentionParams(Frozen):
    batch: PosInt
    seq_len: PosInt
    heads: PosInt
    head_dim: PosInt
    causal: bool = False
    pass_: Literal["fwd", "fwd_bwd"] = Field("fwd", alias="pass")
    kv_heads: PosInt | None = None


class MemoryParams(Frozen):
    pattern: Literal["triad", "copy", "read"]


class CollectiveParams(Frozen):
    op: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"]
    bytes: PosFloat | None = None
    algorithm: Literal["auto", "ring", "tree", "nvls"] = "auto"


class LlmInferenceParams(Frozen):
    scenario: Literal["offline", "server", "fixed_batch"]
    input_len: PosFloat
    output_len: PosFloat | None = None  # some published cases do not state it
    tp: PosInt = 1
    pp: PosInt = 1
    ep: PosInt = 1
    batch: PosInt | None = None
    ttft_limit_s: PosFloat | None = None
    tpot_limit_s: PosFloat | None = None
    kv_precision: Precision | None = None
    layers: PosInt | None = None


class LlmTrainingParams(Frozen):
    seq_len: PosInt
    global_batch: PosInt
    micro_batch: PosInt = 1
    tp: PosInt = 1
    pp: PosInt = 1
    dp: PosInt | None = None
    cp: PosInt = 1
    ep: PosInt = 1
    vpp: PosInt = 1
    sequence_parallel: bool = False
    recompute: Literal["none", "selective", "full"] = "none"
    zero: Annotated[int, Field(ge=0, le=3)] = 0
    zero_shard: PosInt | None = None
    layers: PosInt | None = None


class RecsysInferenceParams(Frozen):
    scenario: Literal["offline", "server"]
    batch: PosInt | None = None
    pairs_per_sample: PosFloat = 1.0
    latency_limit_s: PosFloat | None = None


class RecsysTrainingParams(Frozen):
    global_batch: PosInt


@dataclass(frozen=True, slots=True)
class KindSpec:
    params: type[Frozen]
    metrics: tuple[str, ...]
    needs_model: bool


KINDS: dict[str, KindSpec] = {
    "gemm": KindSpec(GemmParams, ("tflops",), False),
    "attention": KindSpec(AttentionParams, ("tflops",), False),
    "memory": KindSpec(MemoryParams, ("bandwidth_gb_s",), False),
    "collective": KindSpec(CollectiveParams, ("bus_bandwidth_gb_s", "time_s"), False),
    "llm_inference": KindSpec(LlmInferenceParams, ("tokens_per_s", "tpot_s", "ttft_s"), True),
    "llm_training": KindSpec(LlmTrainingParams, ("step_time_s", "tokens_per_s"), True),
    "recsys_inference": KindSpec(RecsysInferenceParams, ("samples_per_s",), True),
    "recsys_training": KindSpec(RecsysTrainingParams, ("samples_per_s",), True),
}


class NetworkOverride(Frozen):
    scale_out_gbit_s_per_chip: Annotated[float, Field(ge=0)] | None = None


class Software(Frozen):
    """What ran a measurement (SCHEMA.md): the engine, framework or kernel library, its version,
    and the month of its release (or of the measurement's publication)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._+-]*$")
    version: str | None = None
    date: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")

    @pydantic.field_validator("date")
    @classmethod
    def _plausible(cls, value: str | None) -> str | None:
        if value is not None:
            today = datetime.date.today()
            if value > f"{today.year:04d}-{today.month:02d}":
                raise ValueError(f"{value} is in the future")
            if value < EARLIEST_SOFTWARE:
                raise ValueError(f"{value} is before {EARLIEST_SOFTWARE}")
        return value


class _CaseFields(Frozen):
    id: str = Field(pattern=r"^[a-z0-9.-]+$")
    kind: Literal[
        "gemm", "attention", "memory", "collective",
        "llm_inference", "llm_training", "recsys_inference", "recsys_training",
    ]  # fmt: skip
    hardware: str | dict[str, Any]
    chips: PosInt
    chips_per_node: PosInt | None = None
    network: NetworkOverride | None = None
    model: str | dict[str, Any] | None = None
    precision: Precision
    params: dict[str, Any]
    metric: str
    value: PosFloat
    source: str
    confidence: Literal["confirmed", "secondary", "unconfirmed"]
    software: Software | None = None
    notes: str | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """A parsed, checked case: the hardware and model resolved, the params typed."""

    id: str
    kind: str
    chip: ChipSpec
    chips: int
    chips_per_node: int | None
    scale_out_gbit_s_per_chip: float | None
    model: ModelConfig | None
    precision: str
    params: Any
    metric: str
    value: float
    source: str
    confidence: str
    software: Software | None = None

    def system(self, calibration: Calibration | None = None) -> System:
        return System.of(
            self.chip,
            self.chips,
            chips_per_node=self.chips_per_node,
            scale_out_gbit_s_per_chip=self.scale_out_gbit_s_per_chip,
            calibration=calibration,
        )


def parse_case(raw: Any, origin: str, index: int) -> Case:
    data = require_mapping(raw, origin, f"case {index}", "<case>")
    case_id = str(data.get("id", f"case {index}"))
    try:
        fields = _CaseFields.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, case_id) from None
    spec = KINDS[fields.kind]
    try:
        params = spec.params.model_validate(fields.params)
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, case_id, prefix="params") from None
    if fields.metric not in spec.metrics:
        raise TapeoutError(
            f"{origin}: {case_id}: field 'metric': {fields.metric!r} is not a metric of kind "
            f"{fields.kind}; known: {', '.join(spec.metrics)}"
        )
    if spec.needs_model and fields.model is None:
        raise TapeoutError(f"{origin}: {case_id}: field 'model': kind {fields.kind} needs a model")
    chip = resolve_chip(fields.hardware, origin, case_id)
    model = resolve_model(fields.model, origin, case_id) if fields.model is not None else None
    return Case(
        id=fields.id,
        kind=fields.kind,
        chip=chip,
        chips=fields.chips,
        chips_per_node=fields.chips_per_node,
        scale_out_gbit_s_per_chip=fields.network.scale_out_gbit_s_per_chip if fields.network else None,
        model=model,
        precision=fields.precision,
        params=params,
        metric=fields.metric,
        value=fields.value,
        source=fields.source,
        confidence=fields.confidence,
        software=fields.software,
    )


def load_cases(path: Path) -> list[Case]:
    """Parse and check every case of a file; the first bad one raises, naming itself."""
    data = require_mapping(load_data_file(path), str(path), None, "<root>")
    unknown = sorted(set(data) - {"schema", "cases"})
    if unknown:
        raise TapeoutError(f"{path}: unknown top-level fields: {', '.join(unknown)}")
    if data.get("schema") != SCHEMA:
        raise TapeoutError(f"{path}: field 'schema': expected {SCHEMA!r}, got {data.get('schema')!r}")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise TapeoutError(f"{path}: field 'cases': expected a non-empty list")
    cases = [parse_case(raw, str(path), i) for i, raw in enumerate(raw_cases)]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise TapeoutError(f"{path}: {case.id}: field 'id': duplicate case id")
        seen.add(case.id)
    return cases


# ---- predictors ---------------------------------------------------------------------------
class Unsupported(Exception):
    """This tool cannot predict the case yet; the message says why."""


Predictor = Callable[[Case, System], float]
PREDICTORS: dict[str, Predictor] = {}


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


def inference_plan(case: Case) -> InferencePlan:
    """A case's plan: its precision for weights and activations, its KV precision."""
    p: LlmInferenceParams = case.params
    prec: Any = case.precision
    return InferencePlan(
        tp=p.tp, pp=p.pp, ep=p.ep, weight_precision=prec, act_precision=prec,
        kv_precision=p.kv_precision or prec,
    )  # fmt: skip


@predictor("llm_inference")
def _llm_inference(case: Case, system: System) -> float:
    p: LlmInferenceParams = case.params
    if not isinstance(case.model, LLMConfig):
        raise TapeoutError(f"{case.id}: field 'model': kind llm_inference needs a language model")
    model = case.model if p.layers is None else case.model.with_layers(p.layers)
    plan = inference_plan(case)
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
        result = scenarios.offline(replica, p.input_len, out, batch=p.batch, replicas=replicas)
    else:
        if p.ttft_limit_s is None or p.tpot_limit_s is None:
            raise TapeoutError(f"{case.id}: fields 'params.ttft_limit_s' and 'params.tpot_limit_s': "
                               "scenario server needs both (seconds)")  # fmt: skip
        result = scenarios.server(replica, p.input_len, out, ttft_limit_s=p.ttft_limit_s,
                                  tpot_limit_s=p.tpot_limit_s, batch=p.batch, replicas=replicas)  # fmt: skip
    return {"tokens_per_s": result.tokens_per_s, "tpot_s": result.tpot_s, "ttft_s": result.ttft_s}[
        case.metric
    ]


def _sequence_split(chips: int, p: LlmTrainingParams) -> int:
    """How many ways each sequence is split when the data axis is wider than the batch.

    With `dp` unstated, `chips / (tp x pp x cp)` data-parallel ranks can exceed the sequences
    of a step (MLPerf's TPU v5e GPT-3 run: 4,096 chips, 2,048 sequences). An SPMD framework
    then shards the tokens of each sequence over the spare ranks, which is context
    parallelism; a split that is not whole is left for `TrainingPlan` to reject.
    """
    data_ranks = chips // (p.tp * p.pp * p.cp)
    if p.dp is not None or data_ranks <= p.global_batch or data_ranks % p.global_batch:
        return 1
    return data_ranks // p.global_batch


def training_setup(case: Case) -> tuple[LLMConfig, TrainingPlan]:
    """The model (with the `layers` override) and the plan an `llm_training` case states."""
    p: LlmTrainingParams = case.params
    if not isinstance(case.model, LLMConfig):
        raise TapeoutError(f"{case.id}: field 'model': kind llm_training needs a language model")
    model = case.model if p.layers is None else case.model.with_layers(p.layers)
    prec: Any = case.precision
    cp = p.cp * _sequence_split(case.chips, p)
    plan = TrainingPlan(
        tp=p.tp, pp=p.pp, dp=p.dp, cp=cp, ep=p.ep, vpp=p.vpp, micro_batch=p.micro_batch,
        sequence_parallel=p.sequence_parallel, recompute=p.recompute, zero=p.zero, zero_shard=p.zero_shard,
        precision=prec,
    )  # fmt: skip
    return model, plan


def training_prediction(case: Case, system: System, plan: TrainingPlan | None = None) -> float:
    """The case's metric for its stated plan, or for `plan` (what-ifs on the same case)."""
    p: LlmTrainingParams = case.params
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
    rs = recsys.RecsysSystem.of(case.model, system, precision=prec)
    batch = round(p.batch * p.pairs_per_sample) if p.batch else None
    if p.scenario == "server":
        if p.latency_limit_s is None:
            raise TapeoutError(
                f"{case.id}: field 'params.latency_limit_s': scenario server needs it (seconds)"
            )
        result = recsys.server(rs, latency_limit_s=p.latency_limit_s, pairs_per_sample=p.pairs_per_sample,
                               batch_pairs=batch)  # fmt: skip
    else:
        result = recsys.offline(rs, pairs_per_sample=p.pairs_per_sample, batch_pairs=batch)
    return result.samples_per_s


@predictor("recsys_training")
def _recsys_training(case: Case, system: System) -> float:
    p: RecsysTrainingParams = case.params
    if not isinstance(case.model, RecsysConfig):
        raise TapeoutError(f"{case.id}: field 'model': kind recsys_training needs a recommendation model")
    prec: Any = case.precision
    rs = recsys.RecsysSystem.of(case.model, system, precision=prec, training=True)
    return recsys.train_step(rs, p.global_batch).samples_per_s


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


def predict_all(path: Path, calibration: Calibration | None = None) -> list[CaseResult]:
    """Predict every case of a file, in file order."""
    return [predict(c, calibration) for c in load_cases(path)]


def report(results: list[CaseResult]) -> dict[str, Any]:
    """`{"cases": [...], "summary": {...}}` exactly as the schema says."""
    return {"cases": [r.as_dict() for r in results], "summary": summarize(results)}


def run(path: Path, calibration: Calibration | None = None) -> dict[str, Any]:
    """Predict every case of a file: `{"cases": [...], "summary": {...}}` as the schema says."""
    return report(predict_all(path, calibration))
