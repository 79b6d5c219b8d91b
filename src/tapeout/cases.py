"""Validation cases (schema `tapeout-validation/1`, `../shared/validation/SCHEMA.md`): the typed
schema and the loader.

A case file is parsed in full before anything is predicted, so a bad case stops the run with
an error naming the file, the case and the field. The plan fields a case may state are those
the plans mark (`parallel.fields`); a case's plan is built, and refused by name, when it is
parsed.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from tapeout._yaml import load_data_file
from tapeout.checks import MAX_CHIPS, MAX_COUNT, MAX_LAYERS, MAX_PAIRS_PER_SAMPLE, MAX_TOKENS
from tapeout.errors import TapeoutError, entry_id, from_validation, require_mapping
from tapeout.frozen import Frozen
from tapeout.hardware.catalog import resolve_chip
from tapeout.hardware.spec import SPEC_MAX, SPEC_MIN, ChipSpec
from tapeout.parallel.fields import plan_fields
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.calibration import Calibration, calibration_for
from tapeout.perf.system import System
from tapeout.precision import Precision
from tapeout.workloads.models import ModelConfig, resolve_model

SCHEMA = "tapeout-validation/1"
PUBLIC_CASES = Path(__file__).parent / "data" / "public_cases.yaml"
PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
PosFloat = Annotated[float, Field(gt=0, le=MAX_COUNT)]
Tokens = Annotated[int, Field(gt=0, le=MAX_TOKENS)]
Layers = Annotated[int, Field(gt=0, le=MAX_LAYERS)]
# Sequences in flight in an LLM case: 16 x the largest batch an engine runs (TensorRT-LLM, 4,096).
MAX_BATCH = 65_536
# The software family that runs each kind of case (the calibration's `software.families`).
WORKLOADS = {
    "gemm": "kernels", "attention": "kernels", "memory": "kernels", "collective": "kernels",
    "llm_inference": "serving", "llm_training": "training",
    "recsys_inference": "recsys", "recsys_training": "recsys",
}  # fmt: skip
EARLIEST_SOFTWARE = "2015-01"  # no accelerator software older than this is a case


# ---- the schema ---------------------------------------------------------------------------
class GemmParams(Frozen):
    m: PosInt
    n: PosInt
    k: PosInt
    groups: PosInt = 1


class AttentionParams(Frozen):
    batch: PosInt
    seq_len: Tokens
    heads: PosInt
    head_dim: PosInt
    causal: bool = False
    pass_: Literal["fwd", "fwd_bwd"] = Field("fwd", alias="pass")
    kv_heads: PosInt | None = None


class MemoryParams(Frozen):
    pattern: Literal["triad", "copy", "read"]


class CollectiveParams(Frozen):
    op: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"]
    bytes: Annotated[float, Field(ge=1, le=MAX_COUNT)] | None = None
    algorithm: Literal["auto", "ring", "tree", "nvls"] = "auto"


def _with_plan(name: str, plan: type[Any], own: type[Frozen]) -> type[Frozen]:
    """A params schema: `own` fields, and the plan fields a case may state (their types and
    defaults are the plan's; the plan checks their values when the case's plan is built)."""
    hints = typing.get_type_hints(plan)
    fields: dict[str, Any] = {f.name: (hints[f.name], f.default) for f in plan_fields(plan, case=True)}
    model: type[Frozen] = pydantic.create_model(name, __base__=own, **fields)
    return model


class _InferenceOwn(Frozen):
    scenario: Literal["offline", "server", "fixed_batch"]
    input_len: Annotated[float, Field(gt=0, le=MAX_TOKENS)]
    # some published cases do not state it
    output_len: Annotated[float, Field(gt=0, le=MAX_TOKENS)] | None = None
    batch: Annotated[int, Field(gt=0, le=MAX_BATCH)] | None = None
    ttft_limit_s: PosFloat | None = None
    tpot_limit_s: PosFloat | None = None
    layers: Layers | None = None


class _TrainingOwn(Frozen):
    seq_len: Tokens
    global_batch: PosInt
    layers: Layers | None = None


LlmInferenceParams = _with_plan("LlmInferenceParams", InferencePlan, _InferenceOwn)
LlmTrainingParams = _with_plan("LlmTrainingParams", TrainingPlan, _TrainingOwn)


class RecsysInferenceParams(Frozen):
    scenario: Literal["offline", "server"]
    batch: PosInt | None = None
    pairs_per_sample: Annotated[float, Field(ge=1, le=MAX_PAIRS_PER_SAMPLE)] = 1.0
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
    scale_out_gbit_s_per_chip: Annotated[float, Field(ge=0, le=SPEC_MAX)] | None = None  # 0: none

    @pydantic.field_validator("scale_out_gbit_s_per_chip")
    @classmethod
    def _none_or_in_range(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < SPEC_MIN:
            raise ValueError(f"must be 0 (no scale-out network) or at least {SPEC_MIN:g}")
        return value


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
    chips: Annotated[int, Field(gt=0, le=MAX_CHIPS)]
    chips_per_node: Annotated[int, Field(gt=0, le=MAX_CHIPS)] | None = None
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
    plan: InferencePlan | TrainingPlan | None = None  # what an LLM case states, checked

    @property
    def workload(self) -> str:
        """What kind of software ran the case: serving, training, recsys or kernels."""
        return WORKLOADS[self.kind]

    def system(self, calibration: Calibration | None = None) -> System:
        return System.of(
            self.chip,
            self.chips,
            chips_per_node=self.chips_per_node,
            scale_out_gbit_s_per_chip=self.scale_out_gbit_s_per_chip,
            calibration=calibration or calibration_for(self.chip.family, self.software, self.workload),
            load="kernels" if self.workload == "kernels" else "serving",  # a training step switches
        )


def parse_case(raw: Any, origin: str, index: int) -> Case:
    data = require_mapping(raw, origin, f"case {index}", "<case>")
    case_id = entry_id(data, f"case {index}")
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
    try:
        plan = _plan(fields.kind, params, fields.chips, fields.precision)
    except TapeoutError as exc:
        raise TapeoutError(f"{origin}: {case_id}: params: {exc}") from None
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
        plan=plan,
    )


def _plan(kind: str, p: Any, chips: int, precision: Precision) -> InferencePlan | TrainingPlan | None:
    """The plan an LLM case states: its plan fields, with the case's precision."""
    if kind == "llm_inference":
        stated = {f.name: getattr(p, f.name) for f in plan_fields(InferencePlan, case=True)}
        return InferencePlan(precision=precision, **stated)
    if kind == "llm_training":
        stated = {f.name: getattr(p, f.name) for f in plan_fields(TrainingPlan, case=True)}
        plan = TrainingPlan(precision=precision, **stated)  # the stated widths checked first
        split = _sequence_split(chips, plan, p.global_batch)
        return plan if split == 1 else dataclasses.replace(plan, cp=plan.cp * split)
    return None


def _sequence_split(chips: int, p: TrainingPlan, global_batch: int) -> int:
    """How many ways each sequence is split when the data axis is wider than the batch.

    With `dp` unstated, `chips / (tp x pp x cp)` data-parallel ranks can exceed the sequences
    of a step (MLPerf's TPU v5e GPT-3 run: 4,096 chips, 2,048 sequences). An SPMD framework
    then shards the tokens of each sequence over the spare ranks, which is context
    parallelism; a split that is not whole is left for `TrainingPlan` to reject.
    """
    data_ranks = chips // (p.tp * p.pp * p.cp)
    if p.dp is not None or data_ranks <= global_batch or data_ranks % global_batch:
        return 1
    return data_ranks // global_batch


def load_cases(path: Path) -> list[Case]:
    """Parse and check every case of a file; the first bad one raises, naming itself."""
    data = require_mapping(load_data_file(path), str(path), None, "<root>")
    unknown = sorted(str(k) for k in set(data) - {"schema", "cases"})  # YAML keys need not be strings
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
