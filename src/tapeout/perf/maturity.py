"""Software maturity over time: how a vendor stack's efficiency on a chip rises after it first runs
a workload, fitted to dated observations of the same benchmark on the same system
(`maturity.yaml`), so a study can say how long a new chip's software takes to reach a given share
of its mature efficiency.

The curve is share(t) = 1 - a exp(-t / tau), t in months since the debut (the chip's first
public submission of that benchmark): a share 1 - a at the debut, rising to the mature level with
time constant tau. Each observation is a throughput ratio between two releases, so it constrains
share(t2) / share(t1); `a` and `tau` minimise the squared error of the log ratios.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError

MATURITY_FILE = Path(__file__).parent / "maturity.yaml"
SCHEMA = "tapeout-maturity/1"
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# The fit's search: the debut share 1 - a from 1 % to 100 %, tau from a week to ten years.
A_GRID = np.linspace(0.0, 0.99, 199)
TAU_GRID = np.geomspace(0.25, 120.0, 400)


def months(text: str, field: str) -> int:
    """A `YYYY-MM` month as a count of months.

    >>> months("2024-06", "after") - months("2023-11", "before")
    7
    """
    m = _MONTH.match(str(text))
    if not m:
        raise TapeoutError(f"field {field!r}: expected a month as YYYY-MM, got {text!r}")
    return 12 * int(m.group(1)) + int(m.group(2)) - 1


@dataclass(frozen=True, slots=True)
class Observation:
    id: str
    chip: str
    start: float  # months since the debut, of the earlier release
    end: float  # of the later release
    ratio: float  # throughput of the later over the earlier
    source: str


@dataclass(frozen=True, slots=True)
class Maturity:
    """The fitted curve and the observations it rests on."""

    a: float
    tau_months: float
    observations: tuple[Observation, ...]

    def share(self, t_months: float) -> float:
        """Share of the mature efficiency `t_months` after the debut."""
        return 1.0 - self.a * math.exp(-max(0.0, t_months) / self.tau_months)

    def months_to(self, share: float) -> float:
        """Months after the debut until the share reaches `share` (0 if it starts there)."""
        if not 0.0 < share < 1.0:
            raise TapeoutError(f"field 'share': must be between 0 and 1 (exclusive), got {share}")
        if 1.0 - self.a >= share:
            return 0.0
        return -self.tau_months * math.log((1.0 - share) / self.a)

    def predicted_ratio(self, o: Observation) -> float:
        return self.share(o.end) / self.share(o.start)


def _observation(raw: Any, index: int, origin: str) -> Observation:
    where = f"{origin}: observations[{index}]"
    if not isinstance(raw, Mapping):
        raise TapeoutError(f"{where}: expected a mapping, got {type(raw).__name__}")
    missing = [k for k in ("id", "chip", "debut", "before", "after", "ratio", "source") if k not in raw]
    if missing:
        raise TapeoutError(f"{where}: missing fields {missing}")
    debut, before, after = (months(raw[k], k) for k in ("debut", "before", "after"))
    if not debut <= before < after:
        raise TapeoutError(f"{where} ({raw['id']}): expected debut <= before < after, got "
                           f"{raw['debut']}, {raw['before']}, {raw['after']}")  # fmt: skip
    ratio = raw["ratio"]
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0.1 <= ratio <= 10.0:
        raise TapeoutError(
            f"{where} ({raw['id']}): field 'ratio': a throughput ratio in [0.1, 10], got {ratio!r}"
        )
    return Observation(str(raw["id"]), str(raw["chip"]), before - debut, after - debut, float(ratio),
                       str(raw["source"]))  # fmt: skip


def fit(observations: tuple[Observation, ...]) -> Maturity:
    """`a` and `tau` of least squared log-ratio error over the grid."""
    if len(observations) < 2:
        raise TapeoutError(f"a maturity fit needs at least two observations, got {len(observations)}")
    a, tau = A_GRID[:, None], TAU_GRID[None, :]
    loss = np.zeros((len(A_GRID), len(TAU_GRID)))
    for o in observations:
        model = np.log((1 - a * np.exp(-o.end / tau)) / (1 - a * np.exp(-o.start / tau)))
        loss += (model - math.log(o.ratio)) ** 2
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return Maturity(float(A_GRID[i]), float(TAU_GRID[j]), observations)


def load(path: Path = MATURITY_FILE) -> Maturity:
    """Read, check and fit a maturity file."""
    data = load_data_file(path)
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
        raise TapeoutError(f"{path}: expected a mapping with schema {SCHEMA!r}")
    raw = data.get("observations")
    if not isinstance(raw, list):
        raise TapeoutError(f"{path}: field 'observations': expected a list")
    return fit(tuple(_observation(r, i, str(path)) for i, r in enumerate(raw)))


@cache
def maturity() -> Maturity:
    """The shipped curve."""
    return load()
