"""What every entry of a space's `mix:` shares: how its fields are read, what a lowered entry is,
and what it gives on a batch of designs.

Every kind is its own module (`explore.serving`, `explore.recsys`, `explore.training`),
registered once in `explore.kinds`. An entry lowers its workload once, then evaluates designs two ways: `batch`,
the fast path (the vectorised cost rules of `explore.vector`), and `scalar`, the reference path
(the simulators on one design's real `System`). Both return an `Outcome` whose `per_s` metric is
the entry's units (requests, samples, sequences) per second per chip, the figure the mix's
objectives combine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from tapeout.errors import TapeoutError, shown
from tapeout.explore.silicon import Silicon
from tapeout.parallel.fields import plan_fields

Floats = npt.NDArray[np.float64]
T = TypeVar("T")


def from_fields(cls: type[T], raw: Any, known: Sequence[str], where: str, what: str) -> T:
    """`cls(**raw)` for a mapping of its fields: a field not in `known` is listed with the known
    ones, and a value the class refuses is named at `where`."""
    if not isinstance(raw, Mapping):
        raise TapeoutError(f"{where}: expected a mapping of {what}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TapeoutError(f"{where}: unknown {unknown}; known: {', '.join(known)}")
    try:
        return cls(**raw)
    except TapeoutError as exc:
        raise TapeoutError(f"{where}: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One entry on a batch of designs: metrics per design, which designs meet the entry's limits,
    and why the others do not."""

    metrics: dict[str, Floats]
    feasible: npt.NDArray[np.bool_]
    reasons: list[str]


class Workload(Protocol):
    """A lowered entry of the mix."""

    name: str
    weight: float
    unit: str  # what `per_s` counts
    metrics: tuple[str, ...]  # what its outcomes hold, `per_s` first

    def batch(self, silicons: Sequence[Silicon]) -> Outcome: ...
    def scalar(self, silicon: Silicon) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Fields:
    """Reads the fields of one entry, naming the entry, the field, the value and the unit."""

    raw: Mapping[str, Any]
    where: str

    def number(self, key: str, unit: str, *, default: float | None = None, above: float = 0.0,
               high: float = 1e12) -> float:  # fmt: skip
        value = self.raw.get(key, default)
        if value is None:
            raise TapeoutError(f"{self.where}: field '{key}': missing ({unit})")
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not above < value <= high:
            raise TapeoutError(f"{self.where}: field '{key}': expected a number in ({above:g}, {high:g}] {unit}, "
                               f"got {shown(value)}")  # fmt: skip
        return float(value)

    def count(self, key: str, unit: str, *, default: int | None = None, high: int = 10**9) -> int:
        value = self.raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
            raise TapeoutError(f"{self.where}: field '{key}': expected a whole number in [1, {high:,}] {unit}, "
                               f"got {shown(value)}")  # fmt: skip
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or not value:
            raise TapeoutError(f"{self.where}: field '{key}': expected a name, got {shown(value)}")
        return value

    def model(self, key: str = "model") -> Any:
        value = self.raw.get(key)
        if not isinstance(value, str | Mapping):
            raise TapeoutError(
                f"{self.where}: field '{key}': expected a catalog model id or a mapping, got {shown(value)}"
            )
        return value

    def plan(self, cls: type[T], key: str = "plan") -> T:
        """A plan from its fields (`parallel.fields`); an unknown field lists the known ones."""
        known = [f.name for f in plan_fields(cls)]
        return from_fields(cls, self.raw.get(key) or {}, known, f"{self.where}: field '{key}'", "plan fields")

    def only(self, allowed: Sequence[str]) -> None:
        unknown = sorted(set(self.raw) - set(allowed))
        if unknown:
            raise TapeoutError(f"{self.where}: unknown fields {unknown}; known: {', '.join(allowed)}")


def best_index(ok: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Per row, the last column where `ok` holds (0 where none does)."""
    width = ok.shape[1]
    last = width - 1 - np.argmax(ok[:, ::-1], axis=1)
    return np.where(ok.any(axis=1), last, 0).astype(np.int64)


def ladder(top: int) -> tuple[int, ...]:
    """Powers of two up to `top`, and `top` itself."""
    out = [1 << i for i in range(top.bit_length()) if 1 << i < top]
    return (*out, top)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What every entry is lowered with: the software profile of our chips, and the folder of the
    space file (files an entry names are read beside it)."""

    software: str
    folder: str = "."
