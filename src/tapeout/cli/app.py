"""The command app and what its commands share: the global options, the console, JSON output,
and how numbers and user strings are printed."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapeout.cli.compile import compile_command
from tapeout.cli.explore import explore_command
from tapeout.cli.study import report_command, study_command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Design AI chips, predict workloads, price fleets.",
)
hardware_app = typer.Typer(no_args_is_help=True, help="The hardware catalog.")
models_app = typer.Typer(no_args_is_help=True, help="The model catalog.")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")
app.command("compile")(compile_command)
app.command("explore")(explore_command)
app.command("study")(study_command)
app.command("report")(report_command)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Hardware = Annotated[str, typer.Option("--hardware", help="A hardware catalog id, or a design file.")]
Software = Annotated[
    str | None,
    typer.Option(
        "--software",
        help="NAME[@VERSION]: the engine or framework whose figures to use (trt-llm, vllm, gpt-fast, "
        "megatron-lm, nemo, maxtext, hugectr...; mature or launch for a new chip) [default: the chip's stack].",
    ),
]
Chips = Annotated[int, typer.Option("--chips", help="Chips in the system (1 to 1,000,000).")]
MaxSeconds = Annotated[
    float,
    typer.Option(
        "--max-seconds", help="Refuse a run estimated to take longer than this, s \\[default: 600]."
    ),
]
# Piped output is not wrapped at 80 columns: ids and paths stay whole on one line.
console = Console(width=None if sys.stdout.isatty() else 200)


@app.callback()
def _options(
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="A calibration file from `tapeout calibrate --write` (or TAPEOUT_CALIBRATION).",
            show_default=False,
        ),
    ] = None,
    max_file_mb: Annotated[
        float | None,
        typer.Option(
            "--max-file-mb", help="Largest data file read, MB (or TAPEOUT_MAX_FILE_MB) \\[default: 64].",
            show_default=False,
        ),
    ] = None,
) -> None:  # fmt: skip
    """Design AI chips, predict workloads, price fleets."""
    # imported here, not at the top: start-up time (see the package docstring)
    if max_file_mb is not None:
        from tapeout._yaml import set_max_file_mb

        set_max_file_mb(max_file_mb)
    if calibration is not None:
        from tapeout.perf.calibration import use

        use(calibration)


@contextlib.contextmanager
def busy(what: str, as_json: bool) -> Iterator[None]:
    """A spinner on stderr while a run of seconds goes, when stderr is a terminal and the output
    is not JSON."""
    if as_json or not sys.stderr.isatty():
        yield
        return
    with Console(stderr=True).status(what):
        yield


def finite(obj: Any) -> Any:
    """`obj` with every infinite or NaN float as None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(finite(obj), indent=2, default=str, allow_nan=False) + "\n")


def num(x: float | None, unit: str = "", digits: int = 3) -> str:
    """A number for people: thousands separators from 1,000, `digits` significant digits below,
    never scientific notation; '-' for none."""
    if x is None or not math.isfinite(x):
        return "-"
    if abs(x) >= 1000 or x == int(x):
        text = f"{x:,.0f}"
    else:
        text = f"{x:,.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"
    return f"{text} {unit}" if unit else text


def usd(x: float | None) -> str:
    """Dollars: whole dollars with separators, cents below $100."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def text(value: Any) -> str:
    """A value from the user or a file, safe to print through rich (no markup)."""
    return escape(str(value))


def table_of(title: str, rows: list[dict[str, Any]], units: dict[str, str] | None = None) -> Table:
    """Rows of a dict each as a table; numbers printed by `num`, column titles with their units."""
    table = Table(title=escape(title))
    for key in rows[0]:
        unit = (units or {}).get(key)
        table.add_column(escape(f"{key} ({unit})" if unit else key), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return num(value)
    if isinstance(value, dict | list):
        return escape(json.dumps(value))
    return escape(str(value))
