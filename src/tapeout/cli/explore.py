"""`tapeout explore SPACE.yaml` sweeps a design space into a results store and prints its Pareto
front; `tapeout explore show DIR` reads a store back. Registered on the app by `cli.app`; imports
nothing of the command line so that registration has no cycle, and the explorer only inside the
command."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapeout.errors import TapeoutError

if TYPE_CHECKING:
    from tapeout.explore import Progress, Sweep

FRONT_ROWS = 20  # designs of the front the table shows (the JSON has them all)


def explore_command(
    target: Annotated[str, typer.Argument(metavar="SPACE.yaml | show", help="A space file, or `show`.")],
    folder: Annotated[
        Path | None, typer.Argument(metavar="[DIR]", help="With `show`: the results store to read.")
    ] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (processes) or ray.")] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="HOST:PORT of a Ray cluster to join [default: start one]."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="The results store [default: SPACE.explore beside the file].")
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", help="Designs to evaluate (the space's search.budget).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of random and nsga2 searches.")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Processes or Ray workers [default: every core].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Sweep a design space (SPACE.yaml) into a resumable store and print its Pareto front; or
    `tapeout explore show DIR` to read a store back."""
    from tapeout.explore import explore, show

    if target == "show":
        if folder is None:
            raise TapeoutError("`tapeout explore show DIR`: give the results store to read")
        sweep = show(folder)
    else:
        if folder is not None:
            raise TapeoutError(f"unexpected argument {str(folder)!r}; `tapeout explore SPACE.yaml [options]`")
        path = Path(target)
        if not path.is_file():
            raise TapeoutError(f"{target}: no such space file")
        with _progress(as_json) as report:
            sweep = explore(path, out=out, executor_kind=executor, ray_address=ray_address, workers=workers,
                            budget=budget, seed=seed, progress=report)  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(sweep.as_dict(), indent=2, allow_nan=False) + "\n")
        return
    _print(sweep)


class _progress:
    """A progress bar on stderr when it is a terminal and the output is not JSON: designs done,
    the rate, the best value of the first objective so far."""

    def __init__(self, as_json: bool) -> None:
        self._on = not as_json and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self._on:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[best]}"),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)  # fmt: skip
        self._bar.start()
        self._task = self._bar.add_task("designs", total=None, rate="", best="")
        return self.report

    def report(self, p: Progress) -> None:
        rate = f"{p.evaluated / p.elapsed_s:,.0f} designs/s" if p.elapsed_s > 0 else ""
        best = f"best {p.objective} {p.best:.4g}" if p.best is not None else "no feasible design yet"
        self._bar.update(self._task, completed=p.done, total=p.budget, rate=rate, best=best)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print(sweep: Sweep) -> None:
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows, front = sweep.rows, sweep.front
    feasible = sum(r.result.feasible for r in rows)
    now = ""
    if sweep.elapsed_s > 0:  # a sweep that ran, not a store read back
        rate = f", {sweep.evaluated / sweep.elapsed_s:,.0f} designs/s" if sweep.evaluated else ""
        now = f" ({sweep.evaluated:,} evaluated now{rate})"
    console.print(f"{len(rows):,} designs in {escape(str(sweep.folder))}{now}, {feasible:,} feasible; "
                  f"the front holds {len(front):,}")  # fmt: skip
    if not front:
        return
    objectives = [o.metric for o in sweep.objectives]
    knobs = list(front[0].result.knobs)
    table = Table(title="Pareto front: " + ", ".join(f"{o.metric} ({o.direction})" for o in sweep.objectives))
    for col in (*knobs, *objectives, "die_area_mm2", "unit_cost_usd"):
        table.add_column(escape(col), justify="right", overflow="fold")
    first = sweep.objectives[0]
    ordered = sorted(
        front, key=lambda r: r.result.metrics[first.metric] * (-1 if first.direction == "max" else 1)
    )
    for r in ordered[:FRONT_ROWS]:
        m = r.result.metrics
        table.add_row(*(escape(str(r.result.knobs[k])) for k in knobs),
                      *(_num(m[k]) for k in (*objectives, "die_area_mm2", "unit_cost_usd")))  # fmt: skip
    console.print(table)
    if len(front) > FRONT_ROWS:
        console.print(f"[dim]{len(front) - FRONT_ROWS:,} more on the front: --json lists them all[/dim]")


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"
