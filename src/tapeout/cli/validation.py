"""Validation against published measurements, and calibration."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tapeout.cli.app import JsonFlag, app, console, num, print_json


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return num(x, digits=4)


def _progress(what: str, show: bool) -> Progress:
    """A progress bar on stderr when it is a terminal and the output is not JSON."""
    return Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, disable=not show)  # fmt: skip


@app.command()
def validate(
    file: Annotated[
        Path | None,
        typer.Argument(help="A case file (schema tapeout-validation/1); default: the bundled public cases."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Predict every case of a validation file and report the errors."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.validate import PUBLIC_CASES, load_cases, predict, report

    cases = load_cases(file or PUBLIC_CASES)
    with _progress("predicting", not as_json and sys.stderr.isatty()) as bar:
        results = [predict(c) for c in bar.track(cases)]
    if as_json:
        print_json(report(results))
        return
    table = Table(title=escape(f"validation: {file or 'bundled public cases'}"))
    for col in ("case", "kind", "software", "metric", "measured", "predicted", "error"):
        right = col in ("measured", "predicted", "error")
        table.add_column(col, justify="right" if right else "left", overflow="fold", no_wrap=col == "error")
    reasons: dict[str, str] = {}
    for r in results:
        err = r.error
        if err is None:
            reasons[r.kind] = r.reason or ""
            err_s = "[yellow]unsupported[/yellow]"
        else:
            color = "green" if abs(err) <= 0.10 else "yellow" if abs(err) <= 0.25 else "red"
            err_s = f"[{color}]{100 * err:+.1f}%[/{color}]"
        table.add_row(escape(r.id), r.kind, escape(r.software or "-"), r.metric, _fmt(r.measured),
                      _fmt(r.predicted), err_s)  # fmt: skip
    console.print(table)
    for kind, reason in reasons.items():
        console.print(f"[yellow]unsupported[/yellow] {kind}: {escape(reason)}")
    s = report(results)["summary"]
    for group, title in (("by_kind", "kind"), ("by_confidence", "confidence")):
        kinds = Table(title=f"by {title}")
        for col in (title, "cases", "MAPE", "unsupported"):
            kinds.add_column(col)
        for kind, k in s[group].items():
            kinds.add_row(kind, str(k["n"]), f"{100 * k['mape']:.1f}%", str(k.get("unsupported", 0)))
        console.print(kinds)
    console.print(
        f"MAPE {100 * s['mape']:.1f}% over {s['n']} cases (an unsupported case counts as 100 %); "
        f"within 10 %: {100 * s['within_10pct']:.0f}%, within 25 %: {100 * s['within_25pct']:.0f}%; "
        f"unsupported: {s['unsupported']}"
    )


@app.command()
def calibrate(
    cases: Annotated[
        Path | None, typer.Option(help="Case file to fit on; default: the bundled public cases.")
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option(
            "--write",
            metavar="PATH",
            help="Write a complete calibration file with the fitted figures to PATH (never the "
            "package's own file); use it with --calibration PATH or TAPEOUT_CALIBRATION=PATH.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --write: write even if the fit's held-out error is worse than the figures in force.",
        ),
    ] = False,
    serving: Annotated[
        bool,
        typer.Option("--serving", help="Also report held-out errors of the LLM serving cases (minutes)."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-derive the efficiency figures from the public cases, with held-out errors."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.calibrate import calibrate as fit
    from tapeout.errors import TapeoutError
    from tapeout.validate import PUBLIC_CASES

    if force and write is None:
        raise TapeoutError("--force applies only with --write PATH")
    with _progress("fitting and holding out", not as_json and sys.stderr.isatty()) as bar:
        task = bar.add_task("fit", total=None)
        result = fit(cases or PUBLIC_CASES, write=write, serving=serving, force=force,
                     progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    if as_json:
        print_json(result)
        return
    _print_fit(result)
    if "written" in result:
        _print_written(result)


def _print_fit(result: dict[str, Any]) -> None:
    table = Table(title="calibration figures")
    for col in ("figure", "stack", "fitted", "in force", "cases"):
        table.add_column(col)
    for f in result["figures"]:
        table.add_row(
            escape(f["figure"]), escape(f["stack"]), f"{f['fitted']:.3f}", f"{f['current']:.3f}", str(f["n"])
        )
    console.print(table)
    loo = Table(title="held-out (leave-one-out) error per case")
    for col in ("case", "in-sample", "held-out"):
        loo.add_column(col)
    for c in result["cases"]:
        loo.add_row(escape(c["id"]), f"{100 * c['in_sample']:+.1f}%", f"{100 * c['held_out']:+.1f}%")
    console.print(loo)
    for kind, k in result["by_kind"].items():
        console.print(
            f"{escape(kind)}: {k['n']} cases, MAPE in-sample {100 * k['mape_in_sample']:.1f}%, "
            f"held-out {100 * k['mape_held_out']:.1f}%"
        )
    console.print(
        f"all {len(result['cases'])} cases: MAPE of the figures in force {100 * result['mape_current']:.1f}%, "
        f"of the fit in-sample {100 * result['mape_in_sample']:.1f}%, held-out {100 * result['mape_held_out']:.1f}%"
    )


def _print_written(result: dict[str, Any]) -> None:
    path = escape(result["written"])
    if result.get("forced"):
        console.print(
            f"[yellow]--force:[/yellow] written although the fit's held-out MAPE "
            f"({100 * result['mape_held_out']:.1f}%) is worse than the figures in force "
            f"({100 * result['mape_current']:.1f}%)"
        )
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    console.print(
        f"use it with: tapeout --calibration {path} COMMAND ...  or  TAPEOUT_CALIBRATION={path} tapeout COMMAND ...",
        highlight=False,
        soft_wrap=True,
    )
