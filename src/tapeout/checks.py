"""The input boundary: a number from the CLI, an API call or a data file is checked once, where it
enters, and refused with the field, the value and the unit or range.

A number must be finite and inside its unit's range; zero is accepted only where it means
something (a levy of 0 %), and never stands for "the default": a field left out is None.

>>> count("chips", 8)
8
>>> number("rate", float("inf"), "requests/s", above=0)
Traceback (most recent call last):
...
tapeout.errors.TapeoutError: field 'rate': must be a finite number > 0 requests/s, got inf
"""

from __future__ import annotations

import contextlib
import math
from numbers import Integral, Real

from tapeout.errors import TapeoutError, shown

# The largest system any command models: a few times the largest clusters built (about 100,000
# accelerators in 2024-2025). A count above it is a typo or a unit slip, not a fleet.
MAX_CHIPS = 1_000_000
# The longest sequence any command models, in tokens: ten times the longest context offered (10
# million, Llama 4 Scout, 2025). Attention is costed per block of 128 keys, so a length far past
# it would run for hours; and a length must stay an exact 64-bit integer.
MAX_TOKENS = 100_000_000
# The deepest model: ten times the deepest transformer trained (DeepNet, 1,000 layers, 2022).
# Parameters and graphs are summed layer by layer.
MAX_LAYERS = 10_000
# The largest width, count or size a model or case states (hidden size, vocabulary, table rows,
# matrix dimensions, batch): a trillion. Past it a value is a slip of units, and the cost model's
# products of a few such values would overflow floating point.
MAX_COUNT = 10**12
# User-item pairs one recommendation sample ranks: at least one, and at most a million (MLPerf's
# DLRM samples rank about 270).
MAX_PAIRS_PER_SAMPLE = 1e6


def bound(x: float) -> str:
    """A bound as written: 100,000,000 rather than 1e+08, 1e-06 for the small ones."""
    return f"{int(x):,}" if x == int(x) and abs(x) >= 1 else f"{x:g}"


def _range(above: float | None, low: float | None, high: float | None, unit: str) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {bound(above)}")
    if low is not None:
        parts.append(f">= {bound(low)}")
    if high is not None:
        parts.append(f"<= {bound(high)}")
    return " and ".join(parts) + (f" {unit}" if unit else "")


def number(
    field: str,
    value: object,
    unit: str = "",
    *,
    above: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> float:
    """`value` as a finite float inside the range: `above` (exclusive), `low` and `high`
    (inclusive)."""
    v = math.nan
    if isinstance(value, Real) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer past the largest float: refused below
            v = float(value)
    inside = (above is None or v > above) and (low is None or v >= low) and (high is None or v <= high)
    if math.isfinite(v) and inside:
        return v
    raise TapeoutError(
        f"field '{field}': must be a finite number {_range(above, low, high, unit)}, got {shown(value)}"
    )


def count(field: str, value: object, *, low: int = 1, high: int | None = None, unit: str = "") -> int:
    """`value` as a whole number inside [low, high] (a float with no fraction is accepted)."""
    whole: int | None = None
    if (isinstance(value, Integral) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    ):
        whole = int(value)
    if whole is not None and whole >= low and (high is None or whole <= high):
        return whole
    span = f">= {low}" + (f" and <= {high:,}" if high is not None else "")
    raise TapeoutError(
        f"field '{field}': must be a whole number {span}{' ' + unit if unit else ''}, got {shown(value)}"
    )


def optional_count(
    field: str, value: object, *, low: int = 1, high: int | None = None, unit: str = ""
) -> int | None:
    """`count`, with None meaning the field was left out."""
    return None if value is None else count(field, value, low=low, high=high, unit=unit)


def optional_number(
    field: str, value: object, unit: str = "", *, above: float | None = None, low: float | None = None,
    high: float | None = None,
) -> float | None:  # fmt: skip
    """`number`, with None meaning the field was left out."""
    return None if value is None else number(field, value, unit, above=above, low=low, high=high)


def chips(value: object, field: str = "chips") -> int:
    """A chip count: 1 to MAX_CHIPS."""
    return count(field, value, high=MAX_CHIPS, unit="chips")


def work(what: str, estimate_s: float, budget_s: float | None, flag: str | None) -> None:
    """Refuse work estimated to run longer than the budget, before it starts; `flag` names the
    option that raises the budget, when there is one."""
    if budget_s is None:
        return
    budget = number("max_seconds", budget_s, "s", above=0)
    if estimate_s > budget:
        raise TapeoutError(
            f"{what} would take about {_duration(estimate_s)} here, more than the budget of "
            f"{_duration(budget)}" + (f"; raise it with {flag} to run it anyway" if flag else "")
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h"
