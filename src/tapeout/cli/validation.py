"""Validation against published measurements, and calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tapeout.cli.app import JsonFlag, app, console, print_json


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


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
    from tapeout.validate import PUBLIC_CASES, predict_all, report

    results = predict_all(file or PUBLIC_CASES)
    if as_json:
        print_json(report(results))
        return
    table = Table(title=f"validation: {file or 'bundled public cases'}")
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
        table.add_row(r.id, r.kind, r.software or "-", r.metric, _fmt(r.measured), _fmt(r.predicted), err_s)
    console.print(table)
    for kind, reason in reasons.items():
        console.print(f"[yellow]unsupported[/yellow] {kind}: {reason}")
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
        bool, typer.Option("--write", help="Write the fitted figures into calibration.yaml.")
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
    from tapeout.validate import PUBLIC_CASES

    result = fit(cases or PUBLIC_CASES, write=write, serving=serving)
    if as_json:
        print_json(result)
        return
    table = Table(title="calibration figures")
    for col in ("figure", "stack", "fitted", "in file", "cases"):
        table.add_column(col)
    for f in result["figures"]:
        table.add_row(f["figure"], f["stack"], f"{f['fitted']:.3f}", f"{f['current']:.3f}", str(f["n"]))
    console.print(table)
    loo = Table(title="held-out (leave-one-out) error per case")
    for col in ("case", "in-sample", "held-out"):
        loo.add_column(col)
    for c in result["cases"]:
        loo.add_row(c["id"], f"{100 * c['in_sample']:+.1f}%", f"{100 * c['held_out']:+.1f}%")
    console.print(loo)
    for kind, k in result["by_kind"].items():
        console.print(
            f"{kind}: {k['n']} cases, MAPE in-sample {100 * k['mape_in_sample']:.1f}%, "
            f"held-out {100 * k['mape_held_out']:.1f}%"
        )
    if write:
        console.print("written to calibration.yaml")
