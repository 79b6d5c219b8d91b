"""A command's plan options, derived from the plan's fields (`parallel.fields`): one flag per field,
`--tp`, `--zero-shard`, ..., with the field's help. A flag left out is None, so the plan's own
default applies (and a search knows which fields were pinned)."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import Field
from typing import Annotated, Any

import typer
from rich.markup import escape

from tapeout.parallel.fields import plan_fields


def _cli_type(hint: Any) -> type:
    args = {a for a in typing.get_args(hint) if a is not type(None)} or {hint}
    if args <= {bool}:
        return bool
    if args <= {int}:
        return int
    if args <= {float}:
        return float
    return str


def _option(f: Field[Any], hint: Any) -> inspect.Parameter:
    flag = "--" + f.name.replace("_", "-")
    default = "" if f.default is None else f" [default: {f.default}]"
    option = typer.Option(flag, help=escape(f"{f.metadata['help']}{default}"), show_default=False)
    kind = _cli_type(hint)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])  # fmt: skip


def plan_options(plan: type[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per field of `plan`; the command receives the fields given as a
    mapping in its `plan_given` argument."""
    hints = typing.get_type_hints(plan)
    extra = [_option(f, hints[f.name]) for f in plan_fields(plan)]
    names = [p.name for p in extra]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(command, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "plan_given"]

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            given = {n: kwargs.pop(n) for n in names if kwargs.get(n) is not None}
            kwargs.pop("plan_given", None)
            command(**{k: v for k, v in kwargs.items() if k not in names}, plan_given=given)

        run.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
        run.__annotations__ = {}
        return run

    return decorate
