"""The study file, `tapeout-study/1`: a fleet plan's demand file (`tco`, `candidates`, `demands`,
exactly as `tapeout plan` reads them) and what the study adds: its name and notes, the bought
option the savings are measured against, the error band, an exploration store, the compiler.

```yaml
schema: tapeout-study/1
name: Should we build our own chips?
notes: free text, shown on the page
baseline: h20                 # a bought candidate: what is bought today (default: the first bought one)
error_quantile: 0.9           # the validation error band carried into the headline
exploration: i1-space.yaml    # optional: a space file (swept here), a `tapeout explore` store, or its JSON
compile: true                 # compile the study's models for our chips (needs the torch extra)
candidates: [...]             # as in `tapeout plan`
demands: [...]
```

Every error names the field, the value and the unit; an unknown chip or model lists the known
ones, before anything long runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError, from_validation, require_mapping
from tapeout.hardware.catalog import get_chip
from tapeout.plan.demand import DemandFile, parse_demand
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model
from tapeout.workloads.recsys import RecsysConfig

SCHEMA = "tapeout-study/1"
FLAGSHIP = Path(__file__).resolve().parent.parent / "data" / "study.yaml"  # examples/study.yaml links here
PLAN_KEYS = ("tco", "candidates", "demands")  # the demand file of `tapeout plan`, read by its parser
MAX_TEXT = 10_000  # characters of a name or notes: a page, not a document


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    schema_: Literal["tapeout-study/1"] = Field(alias="schema")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    notes: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    baseline: str | None = None
    error_quantile: Annotated[float, Field(gt=0, le=1)] = 0.9
    exploration: str | None = None
    compile: bool = True


_UNITS = {"error_quantile": "fraction of the validation cases (0.9: nine in ten)", "name": "characters"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Study:
    """A checked study: the plan's demand file and the study's own options."""

    name: str
    notes: str
    origin: str  # the file it came from
    demand: DemandFile
    baseline: str  # a bought candidate's key
    error_quantile: float
    exploration: Path | None
    compile: bool

    @property
    def ours(self) -> tuple[str, ...]:
        """Keys of the candidates that are our own designs (vendor tapeout, priced at unit cost)."""
        return tuple(c.key for c in self.demand.candidates if _in_house(c.hardware, c.price_usd))

    @property
    def bought(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.demand.candidates if c.key not in self.ours)


def _in_house(hardware: str, price_usd: float | None) -> bool:
    return get_chip(hardware).vendor == "tapeout" and price_usd is None


def parse_study(data: Any, origin: str = "study", folder: Path | None = None) -> Study:
    """Validate a study mapping; `folder` resolves a relative exploration path.

    >>> s = parse_study({"schema": "tapeout-study/1", "name": "t",
    ...     "candidates": [{"hardware": "h20"}, {"hardware": "tapeout-i1"}],
    ...     "demands": [{"kind": "recsys", "name": "rank", "model": "dlrm-v2", "qps": 1e5, "latency_limit_s": 0.01}]})
    >>> s.baseline, s.ours
    ('h20', ('tapeout-i1',))
    >>> parse_study({"schema": "tapeout-study/1", "name": "t", "colour": 1, "candidates": [], "demands": []})
    Traceback (most recent call last):
    ...
    tapeout.errors.TapeoutError: study: unknown field 'colour'; known: baseline, candidates, compile, demands, error_quantile, exploration, name, notes, schema, tco
    """
    mapping: Mapping[str, Any] = require_mapping(data, origin, None, "<root>")
    known = sorted(["schema" if k == "schema_" else k for k in _Options.model_fields] + list(PLAN_KEYS))
    unknown = sorted(str(k) for k in mapping if k not in known)
    if unknown:
        raise TapeoutError(
            f"{origin}: unknown field {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    if mapping.get("schema") != SCHEMA:
        raise TapeoutError(f"{origin}: field 'schema': expected {SCHEMA!r}, got {mapping.get('schema')!r}")
    try:
        options = _Options.model_validate({k: v for k, v in mapping.items() if k not in PLAN_KEYS})
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, None, units=_UNITS) from None
    demand = parse_demand({k: v for k, v in mapping.items() if k in PLAN_KEYS}, origin)
    _check_ids(demand, origin)
    ours = [c.key for c in demand.candidates if _in_house(c.hardware, c.price_usd)]
    bought = [c.key for c in demand.candidates if c.key not in ours]
    if not ours or not bought:
        raise TapeoutError(
            f"{origin}: field 'candidates': a study compares our own designs (vendor tapeout, no price_usd) "
            f"with chips to buy; got ours: {', '.join(ours) or 'none'}; bought: {', '.join(bought) or 'none'}"
        )
    baseline = options.baseline or bought[0]
    if baseline not in bought:
        raise TapeoutError(
            f"{origin}: field 'baseline': {baseline!r} is not a bought candidate; bought: {', '.join(bought)}"
        )
    exploration = None
    if options.exploration is not None:
        exploration = Path(options.exploration)
        if not exploration.is_absolute() and folder is not None:
            exploration = folder / exploration
    return Study(name=options.name, notes=options.notes, origin=origin, demand=demand, baseline=baseline,
                 error_quantile=options.error_quantile, exploration=exploration, compile=options.compile)  # fmt: skip


def _check_ids(demand: DemandFile, origin: str) -> None:
    """Every chip and model the study names exists (the error lists the known ones) and every
    demand's model is of its kind."""
    for i, c in enumerate(demand.candidates):
        try:
            get_chip(c.hardware)
        except TapeoutError as exc:
            raise TapeoutError(f"{origin}: field 'candidates.{i}.hardware': {exc}") from None
    for i, d in enumerate(demand.demands):
        try:
            config = resolve_model(d.model, origin, d.name)
        except TapeoutError as exc:
            raise TapeoutError(f"{origin}: field 'demands.{i}.model': {exc}") from None
        want = RecsysConfig if d.kind == "recsys" else LLMConfig
        if not isinstance(config, want):
            what = "a recommendation model" if d.kind == "recsys" else "a language model"
            raise TapeoutError(
                f"{origin}: field 'demands.{i}.model': a {d.kind} demand needs {what}; got {d.model!r}"
            )


def load_study(path: Path | None = None) -> Study:
    """Read and check a study file (YAML or JSON); None: the bundled flagship study."""
    path = path or FLAGSHIP
    return parse_study(load_data_file(path), str(path), path.parent)
