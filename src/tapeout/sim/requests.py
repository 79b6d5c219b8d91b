"""Serving requests: arrival time, prompt length and output length, as three numpy columns.

They come from a Poisson process or all at once (offline), with lengths fixed, uniform or
log-normal, or from a trace file: JSON lines or CSV with the columns `arrival_s`, `input_len`
and `output_len` (one request per row; arrival in seconds from the start of the trace).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from tapeout._yaml import read_text_file
from tapeout.checks import MAX_TOKENS, bound
from tapeout.errors import TapeoutError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
TRACE_COLUMNS = ("arrival_s", "input_len", "output_len")
# Bounds of a trace's fields: a century of arrivals, and MAX_TOKENS a request.
MAX_ARRIVAL_S = 3.2e9


@dataclass(frozen=True, slots=True, kw_only=True)
class Lengths:
    """A distribution of token counts.

    `fixed`: every request has `mean` tokens (a fractional mean alternates the two nearest
    integers so that the mean is exact); `uniform`: integers in [low, high]; `lognormal`:
    log-normal with that mean and log-space standard deviation `sigma`, rounded, at least 1.

    >>> Lengths(kind="fixed", mean=2.5).sample(4, np.random.default_rng(0)).tolist()
    [2, 3, 2, 3]
    """

    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    mean: float = 0.0
    low: int = 1
    high: int = 1
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind in ("fixed", "lognormal") and not self.mean >= 1:
            raise TapeoutError(f"length {self.kind}: mean must be >= 1 token, got {self.mean}")
        if self.kind == "uniform" and not 1 <= self.low <= self.high:
            raise TapeoutError(f"length uniform: need 1 <= low <= high tokens, got {self.low}..{self.high}")
        if self.kind == "lognormal" and not self.sigma >= 0:
            raise TapeoutError(f"length lognormal: sigma must be >= 0, got {self.sigma}")

    @property
    def average(self) -> float:
        return (self.low + self.high) / 2 if self.kind == "uniform" else self.mean

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        if self.kind == "fixed":
            steps = np.floor(np.arange(n + 1) * self.mean + 1e-9)
            fixed: IntArray = np.diff(steps).astype(np.int64)
            return fixed
        if self.kind == "uniform":
            drawn: IntArray = rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)
            return drawn
        mu = math.log(self.mean) - self.sigma**2 / 2
        rounded: IntArray = np.maximum(1, np.rint(rng.lognormal(mu, self.sigma, size=n))).astype(np.int64)
        return rounded


def _as_lengths(value: Lengths | float) -> Lengths:
    return value if isinstance(value, Lengths) else Lengths(kind="fixed", mean=float(value))


@dataclass(frozen=True, slots=True, eq=False)
class Requests:
    """Requests sorted by arrival."""

    arrival_s: FloatArray
    input_len: IntArray
    output_len: IntArray

    def __len__(self) -> int:
        return len(self.arrival_s)

    @classmethod
    def of(cls, arrival_s: FloatArray, input_len: IntArray, output_len: IntArray) -> Requests:
        order = np.argsort(arrival_s, kind="stable")
        return cls(
            np.asarray(arrival_s, dtype=np.float64)[order],
            np.asarray(input_len, dtype=np.int64)[order],
            np.asarray(output_len, dtype=np.int64)[order],
        )

    @classmethod
    def offline(
        cls, n: int, input_len: Lengths | float, output_len: Lengths | float, seed: int = 0
    ) -> Requests:
        """`n` requests, all queued at time zero.

        >>> len(Requests.offline(8, 100, 50)), int(Requests.offline(8, 100, 50).output_len.sum())
        (8, 400)
        """
        _check_count(n)
        rng = np.random.default_rng(seed)
        ins, outs = _as_lengths(input_len).sample(n, rng), _as_lengths(output_len).sample(n, rng)
        return cls(np.zeros(n), ins, outs)

    @classmethod
    def poisson(
        cls, n: int, rate: float, input_len: Lengths | float, output_len: Lengths | float, seed: int = 0
    ) -> Requests:
        """`n` requests arriving as a Poisson process of `rate` requests per second."""
        _check_count(n)
        if not rate > 0:
            raise TapeoutError(f"field 'rate': must be > 0 requests/s, got {rate}")
        rng = np.random.default_rng(seed)
        arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
        ins, outs = _as_lengths(input_len).sample(n, rng), _as_lengths(output_len).sample(n, rng)
        return cls(arrivals, ins, outs)

    @classmethod
    def from_trace(cls, path: str | Path) -> Requests:
        """Read a JSONL or CSV trace; a bad row is reported by its line number and field."""
        path = Path(path)
        # The same checks as every data file: a regular file, within the size limit, UTF-8 text.
        text = read_text_file(path, f"trace file {path}")
        rows: list[tuple[int, dict[str, object]]] = []
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(text.splitlines())
            try:
                missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise TapeoutError(f"trace file {path}: header lacks column(s) {', '.join(missing)}")
                for r in reader:
                    if None in r:  # more fields than the header names
                        raise TapeoutError(
                            f"trace file {path}, line {reader.line_num}: {len(reader.fieldnames or []) + len(r[None])} "
                            f"fields, the header names {len(reader.fieldnames or [])}"
                        )
                    rows.append((reader.line_num, dict(r)))
            except csv.Error as exc:  # a field over the csv module's size limit
                raise TapeoutError(
                    f"trace file {path}, line {reader.line_num}: not valid CSV ({exc})"
                ) from None
        else:
            for line_no, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:  # ValueError: also an over-long integer
                    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    raise TapeoutError(
                        f"trace file {path}, line {line_no}: not valid JSON ({reason})"
                    ) from None
                if not isinstance(row, dict):
                    raise TapeoutError(f"trace file {path}, line {line_no}: expected an object")
                rows.append((line_no, row))
        if not rows:
            raise TapeoutError(f"trace file {path}: no requests")
        arrival = np.empty(len(rows))
        ins = np.empty(len(rows), dtype=np.int64)
        outs = np.empty(len(rows), dtype=np.int64)
        for i, (line_no, row) in enumerate(rows):
            where = f"trace file {path}, line {line_no}"
            arrival[i] = _number(
                row, "arrival_s", where, "seconds", integer=False, minimum=0, maximum=MAX_ARRIVAL_S
            )
            ins[i] = _number(row, "input_len", where, "tokens", integer=True, minimum=1, maximum=MAX_TOKENS)
            outs[i] = _number(row, "output_len", where, "tokens", integer=True, minimum=1, maximum=MAX_TOKENS)
        return cls.of(arrival, ins, outs)


def _check_count(n: int) -> None:
    if n < 1:
        raise TapeoutError(f"field 'requests': must be >= 1, got {n}")


def _number(
    row: dict[str, object], key: str, where: str, unit: str, *, integer: bool, minimum: float, maximum: float
) -> float:
    if key not in row or row[key] in (None, ""):
        raise TapeoutError(f"{where}: field '{key}' is missing")
    raw = row[key]
    try:
        value = float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else math.nan
    except (ValueError, OverflowError):  # OverflowError: an integer past the largest float
        value = math.nan
    if not math.isfinite(value) or (integer and value != int(value)) or not minimum <= value <= maximum:
        kind = "an integer" if integer else "a number"
        raise TapeoutError(
            f"{where}: field '{key}' must be {kind} >= {bound(minimum)} and <= {bound(maximum)} {unit}, got {raw!r}"
        )
    return value
