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

from tapeout.cli.app import JsonFlag, Software, app, console, num, print_json


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
    software: Software = None,
    as_json: JsonFlag = False,
) -> None:
    """Predict every case of a validation file and report the errors; with --software, every case
    as run under that software instead of its own (a what-if)."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.perf.calibration import SoftwareRef
    from tapeout.validate import PUBLIC_CASES, load_cases, predict, report, software_notes, with_software

    ref = SoftwareRef.parse(software) if software is not None else None
    cases = with_software(load_cases(file or PUBLIC_CASES), ref)
    for note in software_notes(cases):  # once per name, on stderr: JSON output stays per the schema
        Console(stderr=True, width=None if sys.stderr.isatty() else 200).print(f"note: {escape(note)}")
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
    split_date: Annotated[
        str | None,
        typer.Option(
            "--split-date",
            metavar="YYYY-MM",
            help="Fit on the cases dated before this month (and the undated ones) and report the error "
            "on the cases dated in it or later, beside the figures in force. An evaluation: not with --write.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-derive the efficiency figures from the public cases, with held-out errors; with
    --split-date, fit on the cases dated before a month and report the error on the later ones."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.calibrate import calibrate as fit
    from tapeout.errors import TapeoutError
    from tapeout.validate import PUBLIC_CASES

    if split_date is not None and write is not None:
        raise TapeoutError(
            f"--write cannot be used with --split-date {split_date}: a split fit is an evaluation of how "
            "the figures carry over to later results, not a calibration to use; drop --split-date to write one"
        )
    if force and write is None:
        raise TapeoutError("--force applies only with --write PATH")
    if split_date is not None:
        _split(cases or PUBLIC_CASES, split_date, serving, as_json)
        return
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


def _split(cases: Path, month: str, serving: bool, as_json: bool) -> None:
    """`calibrate --split-date`: fit on the earlier cases, report the error on the later ones."""
    from tapeout.calibrate_split import split

    with _progress("fitting on the earlier cases", not as_json and sys.stderr.isatty()) as bar:
        task = bar.add_task("fit", total=None)
        result = split(cases, month, serving=serving,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    if as_json:
        print_json(result)
    else:
        _print_split(result)


def _pct(x: float | None) -> str:
    return "unsupported" if x is None else f"{100 * x:+.1f}%"


def _print_split(result: dict[str, Any]) -> None:
    month, n = result["split_date"], result["counts"]
    table = Table(title=f"figures fitted on the {n['fitted_on']} cases dated before {month} or undated")
    for col in ("figure", "entry (stack, family or profile)", "split fit", "in force", "cases"):
        table.add_column(col)
    for f in result["figures"]:
        fitted = "kept (in force)" if f["fitted"] is None else f"{f['fitted']:.3f}"
        table.add_row(escape(f["figure"]), escape(f["stack"]), fitted, f"{f['current']:.3f}", str(f["n"]))
    console.print(table)
    later = Table(title=f"error on the cases dated {month} or later")
    for col in ("case", "kind", "date", "split fit", "in force", ""):
        later.add_column(col)
    for c in result["cases"]:
        note = "figure kept in force" if c["kept"] else ""
        later.add_row(
            escape(c["id"]), c["kind"], c["date"], _pct(c["error_split"]), _pct(c["error_current"]), note
        )
    console.print(later)
    groups = [*result["by_kind"].items(), *result["by_confidence"].items(), ("all", result["all"])]
    if 0 < result["carried_over"]["n"] < result["all"]["n"]:
        groups.append(("without a figure kept in force", result["carried_over"]))
    for label, k in groups:
        kept = f" ({k['kept']} with a figure kept in force)" if k["kept"] else ""
        console.print(
            f"{escape(label)}: {k['n']} later cases{kept}, MAPE of the split fit "
            f"{100 * k['mape_split']:.1f}%, of the figures in force {100 * k['mape_current']:.1f}%"
        )
    skipped = ", ".join(f"{kind} {count}" for kind, count in n["not_evaluated"].items())
    if "llm_inference" in n["not_evaluated"]:
        skipped += "; --serving adds llm_inference"
    console.print(
        f"{n['cases']} cases: {n['undated']} undated (fitted on, never evaluated), {n['earlier']} dated "
        f"before {month}; fitted on {n['fitted_on']}; {n['later']} dated {month} or later, evaluated "
        f"{n['evaluated']}" + (f" (not evaluated: {skipped})" if skipped else ""),
        highlight=False,
    )


def _print_fit(result: dict[str, Any]) -> None:
    table = Table(title="calibration figures")
    for col in ("figure", "entry (stack, family or profile)", "fitted", "in force", "cases"):
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


@app.command()
def maturity(
    share: Annotated[
        list[float] | None,
        typer.Option(
            "--share", help="Shares of the mature efficiency to time (0-1) [default: 0.8, 0.9, 0.95]."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """How long a vendor stack takes to mature on a new chip: the curve fitted to dated benchmark
    ratios of the same system (perf/maturity.yaml), and the months to reach each share."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.perf.maturity import maturity as fitted

    m = fitted()
    shares = share or [0.8, 0.9, 0.95]
    reach = {f"{s:g}": m.months_to(s) for s in shares}
    if as_json:
        print_json({
            "a": m.a, "tau_months": m.tau_months, "share_at_debut": m.share(0.0), "months_to": reach,
            "observations": [{"id": o.id, "chip": o.chip, "months": [o.start, o.end], "ratio": o.ratio,
                              "fitted_ratio": m.predicted_ratio(o), "source": o.source} for o in m.observations],
        })  # fmt: skip
        return
    console.print(
        f"share of mature efficiency = 1 - {num(m.a)} exp(-t / {num(m.tau_months)} months), t since the stack "
        f"first ran the workload on the chip: {num(100 * m.share(0.0))} % at the debut"
    )
    for s, t in reach.items():
        console.print(f"  {num(100 * float(s))} % after {num(t)} months")
    table = Table(title="observations (same benchmark, same system, two software releases)")
    for col in ("observation", "chip", "months", "measured ratio", "fitted"):
        table.add_column(col)
    for o in m.observations:
        table.add_row(
            escape(o.id), o.chip, f"{num(o.start)} -> {num(o.end)}", num(o.ratio), num(m.predicted_ratio(o))
        )
    console.print(table)
