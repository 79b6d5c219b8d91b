"""The demand file of `tapeout plan`: what must be served or trained, and the chips to buy or build.

```yaml
tco: {years: 5, usd_per_kwh: 0.08}        # optional: any TcoAssumptions field
candidates:
  - {hardware: h20}                          # the newest catalog price
  - {hardware: h200-sxm, levy: 0.25}         # price x 1.25
  - {hardware: h100-sxm, price_usd: 25000, max_chips: 50000}
  - {hardware: tapeout-i1, volume: 500000}   # in-house: unit cost at this production volume
demands:
  - {name: chat, kind: serving, model: llama-3.1-70b, precision: fp8, input_len: 1000,
     output_len: 300, ttft_limit_s: 2, tpot_limit_s: 0.05, tokens_per_s: 2.0e6}
  - {name: ranking, kind: recsys, model: dlrm-v2, qps: 1.0e6, latency_limit_s: 0.01}
  - {name: pretrain, kind: training, model: llama-3.1-8b, tokens: 1.0e12, deadline_days: 30}
```

A serving demand gives exactly one of `tokens_per_s` (output tokens), `requests_per_s`, or
`capacity_of: {hardware: ID, chips: N}` (the capacity N chips of that kind have under the same
limits). Every error names the field, the value and the unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tapeout._yaml import load_data_file
from tapeout.checks import MAX_COUNT, MAX_PAIRS_PER_SAMPLE, MAX_TOKENS
from tapeout.cost.tco import TcoAssumptions
from tapeout.errors import from_validation, require_mapping
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.training import TrainingPlan
from tapeout.precision import Precision

PosFloat = Annotated[float, Field(gt=0)]
PosInt = Annotated[int, Field(ge=1, le=MAX_COUNT)]
# Sequences in one training step: 512 x the largest in use (Llama 3 405B: 2,048 of 8,192 tokens). The
# planner tries every data-parallel width that divides it.
MAX_GLOBAL_BATCH = 1 << 20

# Units of the fields whose names carry no suffix `units.unit_of` knows.
FIELD_UNITS: dict[str, str] = {
    "qps": "samples (queries) per second",
    "input_len": "tokens",
    "output_len": "tokens",
    "tokens": "training tokens",
    "deadline_days": "days",
    "levy": "fraction of the price (0.25 = 25 %)",
    "region": "ISO 3166 two-letter code",
    "max_chips": "chips",
    "chips": "chips",
    "volume": "units built",
    "pairs_per_sample": "user-item pairs per sample",
    "seq_len": "tokens per sequence",
    "global_batch": "sequences per step",
    "years": "years",
    "facility_years": "years",
    "network_fraction": "fraction of cluster capital",
    "usd_per_kwh": "US dollars per kWh",
    "facility_usd_per_w": "US dollars per W",
    "server_usd_per_chip": "US dollars",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Candidate(_Strict):
    """A chip the fleet may use, with its price and how many can be had."""

    hardware: str
    name: str | None = None  # default: the hardware id; names must be unique
    price_usd: PosFloat | None = None  # default: the newest catalog price (in-house: unit cost)
    levy: Annotated[float, Field(ge=0)] = 0.0
    region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # buy at this market's catalog price
    max_chips: PosInt | None = None
    volume: PosInt | None = None  # in-house designs: units built, over which the NRE is spread

    @property
    def key(self) -> str:
        return self.name or self.hardware


class CapacityOf(_Strict):
    hardware: str
    chips: PosInt


class ServingDemand(_Strict):
    """Output tokens per second of an LLM under p99 TTFT and TPOT limits."""

    kind: Literal["serving"]
    name: str
    model: str
    precision: Precision = "fp8"
    kv_precision: Precision | None = None
    input_len: Annotated[float, Field(gt=0, le=MAX_TOKENS)]
    output_len: Annotated[float, Field(ge=2, le=MAX_TOKENS)]
    ttft_limit_s: PosFloat
    tpot_limit_s: PosFloat
    tokens_per_s: PosFloat | None = None
    requests_per_s: PosFloat | None = None
    capacity_of: CapacityOf | None = None

    @property
    def plan(self) -> InferencePlan:
        """The formats every replica runs in (the planner chooses the widths)."""
        return InferencePlan(precision=self.precision, kv_precision=self.kv_precision)

    @model_validator(mode="after")
    def _one_rate(self) -> ServingDemand:
        self.plan  # the formats serving accepts, refused by name  # noqa: B018
        given = [f for f in ("tokens_per_s", "requests_per_s", "capacity_of") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of tokens_per_s, requests_per_s, capacity_of"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class RecsysDemand(_Strict):
    """Recommendation samples per second under a p99 latency limit."""

    kind: Literal["recsys"]
    name: str
    model: str
    qps: PosFloat
    latency_limit_s: PosFloat
    pairs_per_sample: Annotated[float, Field(ge=1, le=MAX_PAIRS_PER_SAMPLE)] = 1.0
    precision: Precision = "int8"

    @property
    def plan(self) -> RecsysPlan:
        return RecsysPlan(precision=self.precision)

    @model_validator(mode="after")
    def _formats(self) -> RecsysDemand:
        self.plan  # the formats recommendation models accept, refused by name  # noqa: B018
        return self


class TrainingDemand(_Strict):
    """A training run of `tokens` tokens that must finish within `deadline_days`."""

    kind: Literal["training"]
    name: str
    model: str
    tokens: PosFloat
    deadline_days: PosFloat
    seq_len: Annotated[int, Field(ge=1, le=MAX_TOKENS)] = 8192
    global_batch: Annotated[int, Field(ge=1, le=MAX_GLOBAL_BATCH)] = 1024
    precision: Precision = "bf16"

    @property
    def plan(self) -> TrainingPlan:
        """The software the searched plans run with: the matmuls' format."""
        return TrainingPlan(precision=self.precision)

    @model_validator(mode="after")
    def _formats(self) -> TrainingDemand:
        self.plan  # the formats training accepts, refused by name  # noqa: B018
        return self


Demand = Annotated[ServingDemand | RecsysDemand | TrainingDemand, Field(discriminator="kind")]


class DemandFile(_Strict):
    """The whole demand file: TCO assumptions, candidate chips and demands."""

    tco: dict[str, float] = Field(default_factory=dict)
    candidates: Annotated[list[Candidate], Field(min_length=1)]
    demands: Annotated[list[Demand], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> DemandFile:
        for what, keys in (
            ("candidates", [c.key for c in self.candidates]),
            ("demands", [d.name for d in self.demands]),
        ):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"{what} must have unique names; repeated: {', '.join(dup)}")
        known = {f.name for f in fields(TcoAssumptions)}
        unknown = sorted(set(self.tco) - known)
        if unknown:
            raise ValueError(f"unknown TCO field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return self

    def assumptions(self) -> TcoAssumptions:
        return TcoAssumptions(**self.tco)


def parse_demand(data: Any, origin: str = "demand") -> DemandFile:
    """Validate a demand mapping; errors name the field, the value and the unit.

    >>> d = parse_demand({"candidates": [{"hardware": "h100-sxm"}],
    ...     "demands": [{"kind": "recsys", "name": "rank", "model": "dlrm-v2", "qps": 1e5, "latency_limit_s": 0.01}]})
    >>> d.demands[0].qps
    100000.0
    >>> parse_demand({"candidates": [{"hardware": "h100-sxm", "levy": -1}], "demands": []})
    Traceback (most recent call last):
    ...
    tapeout.errors.TapeoutError: demand: field 'candidates.0.levy': Input should be greater than or equal to 0 (got -1) (unit: fraction of the price (0.25 = 25 %)); field 'demands': List should have at least 1 item after validation, not 0 (got [])
    """
    mapping: Mapping[str, Any] = require_mapping(data, origin, None, "<root>")
    try:
        out = DemandFile.model_validate(dict(mapping))
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, None, units=FIELD_UNITS) from None
    out.assumptions()  # TcoAssumptions checks its own ranges and names the field
    return out


def load_demand(path: Path) -> DemandFile:
    """Read and validate a demand file (YAML or JSON, safe loaders only)."""
    return parse_demand(load_data_file(path), str(path))
