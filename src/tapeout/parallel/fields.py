"""Plan fields as the one schema: each plan is a frozen dataclass whose fields carry their help
text and where else they appear (a validation case's params, the plan search's pins). The CLI's
options, the case params, the search's pinnable fields and the JSON of a plan are all derived
from these fields, so a new plan field is one edit.
"""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any

import tapeout.checks as checks
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


# How experts' loads spread beyond the multinomial draw of a balanced router (workloads/moe.py):
# the coefficient of variation of expert popularity a trained router leaves (0: none stated, no
# published figure), and the cap on an expert's rows as a multiple of its mean (None: dropless).
ROUTER_SKEW = 0.0
MAX_ROUTER_SKEW = 3.0  # a CV of 3: one expert in ten takes nearly all the tokens
MAX_CAPACITY_FACTOR = 64.0
ROUTER_SKEW_HELP = "MoE: coefficient of variation of expert popularity the router leaves (0-3)."
CAPACITY_HELP = "MoE: cap on an expert's rows, a multiple of its mean; default: dropless."


def check_routing(plan: Any) -> None:
    """A plan's routing statistics: a skew in [0, 3], a capacity factor in (0, 64] or none."""
    checks.number("router_skew", plan.router_skew, low=0.0, high=MAX_ROUTER_SKEW)
    if plan.capacity_factor is not None:
        checks.number("capacity_factor", plan.capacity_factor, "(x an expert's mean rows)", above=0.0,
                      high=MAX_CAPACITY_FACTOR)  # fmt: skip


def as_dict(plan: Any) -> dict[str, Any]:
    """A plan's fields as a JSON-ready mapping."""
    return {f.name: getattr(plan, f.name) for f in fields(plan)}
