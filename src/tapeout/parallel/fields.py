"""Plan fields as the one schema: each plan is a frozen dataclass whose fields carry their help
text and where else they appear (a validation case's params, the plan search's pins). The CLI's
options, the case params, the search's pinnable fields and the JSON of a plan are all derived
from these fields, so a new plan field is one edit.
"""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any

from tapeout.checks import MAX_CHIPS
from tapeout.errors import TapeoutError, shown


def plan_field(default: Any, help: str, *, case: bool = True, searched: bool = False) -> Any:
    """A plan field: `help` for the CLI; `case`: a validation case may state it in its params;
    `searched`: the plan search chooses it (so it may be pinned)."""
    return field(default=default, metadata={"help": help, "case": case, "searched": searched})


def plan_fields(
    plan: type[Any], *, case: bool | None = None, searched: bool | None = None
) -> list[Field[Any]]:
    """The fields of a plan class, optionally only those a case may state or the search chooses."""
    out = []
    for f in fields(plan):
        if case is not None and f.metadata.get("case") != case:
            continue
        if searched is not None and f.metadata.get("searched") != searched:
            continue
        out.append(f)
    return out


def check_widths(plan: Any, names: tuple[str, ...], unit: str = "") -> None:
    """Widths of parallelism (and counts like them): whole, at least 1, and no more than any
    system has chips; a field left out (None) is not checked."""
    for name in names:
        value = getattr(plan, name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CHIPS:
            raise TapeoutError(
                f"field '{name}': must be an integer >= 1 and <= {MAX_CHIPS:,}{' ' + unit if unit else ''}, "
                f"got {shown(value)}"
            )


def as_dict(plan: Any) -> dict[str, Any]:
    """A plan's fields as a JSON-ready mapping."""
    return {f.name: getattr(plan, f.name) for f in fields(plan)}
