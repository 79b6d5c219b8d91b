"""`tapeout study` (a study file to its HTML report and headline) and `tapeout report` (any saved
JSON result as a page). Registered on the app by `cli.app`; imports nothing of the command line so
that registration has no cycle, and the study and the report only inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tapeout.errors import TapeoutError

Force = Annotated[bool, typer.Option("--force", help="Overwrite the output file if it exists.")]


def _refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise TapeoutError(f"{out} exists; give --force to overwrite it")


def _stderr() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else 200, highlight=False)


def study_command(
    study: Annotated[
        Path | None,
        typer.Argument(
            help="A study file (tapeout-study/1); default: the bundled flagship, examples/study.yaml."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="The HTML report to write.")] = Path("study.html"),
    force: Force = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the study's result as JSON.")] = False,
) -> None:
    """Should we build our own chips? Run a study and write its report: one self-contained HTML page."""
    from tapeout.report import render_study, write_page
    from tapeout.report.page import plotly_js
    from tapeout.study import load_study, run_study

    _refuse_existing(out, force)
    plotly_js()  # the report extra, checked before the long part
    spec = load_study(study)
    err = _stderr()
    if not as_json and sys.stderr.isatty():
        with err.status("running the study") as status:
            result = run_study(spec, progress=lambda what: status.update(f"study: {what}"))
    else:
        result = run_study(spec)
    size = write_page(out, render_study(result), force=force)
    where = f"wrote {out} ({size / 1e6:,.1f} MB) in {result.seconds:,.1f} s"
    if as_json:
        err.print(escape(where))
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, allow_nan=False, default=str) + "\n")
        return
    print(where)
    print(result.headline.text)


def report_command(
    result: Annotated[
        Path,
        typer.Argument(
            help="A saved --json result of serve, train, recsys, cost, plan, explore, compile or study."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="The HTML page to write [default: RESULT with .html].")
    ] = None,
    force: Force = False,
) -> None:
    """Draw a saved JSON result as an HTML page in the study's style."""
    from tapeout._yaml import load_data_file
    from tapeout.report import render_result, write_page

    if result.suffix != ".json":
        raise TapeoutError(f"{result}: expected the JSON output of a tapeout command (a .json file)")
    target = out or result.with_suffix(".html")
    _refuse_existing(target, force)
    size = write_page(target, render_result(load_data_file(result), str(result)), force=force)
    print(f"wrote {target} ({size / 1e6:,.1f} MB)")
