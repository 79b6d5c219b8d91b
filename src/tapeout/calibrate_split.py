"""How the fitted figures carry over in time: fit on the cases dated before a month, then
predict the later ones.

`split(path, month)` fits every `fit:` figure of the calibration file in force as `tapeout
calibrate` does (`calibrate.fit_all`). It fits only on the cases whose software is dated before
`month` (strictly earlier), and on the undated ones. It then predicts each case dated in `month`
or later (a "later" case), once with those figures and once with the figures in force. Undated
cases are op-level measurements (NCCL tests, STREAM) that cannot be placed in time, so they are
fitted on and never evaluated.

A figure needs two earlier cases to be fitted, as in `calibrate`. An entry of a stack, family,
profile, era or version with fewer is left out, so its cases take the next entry of their
hierarchy, fitted on the earlier cases: what would have been predicted before its own cases
existed. A default with fewer keeps its value in force, and that value was fitted on every case,
the later ones included. The result names such figures (`fitted` is None). A later case that a
kept default would have been fitted on is marked `kept`, because its error does not measure a
carry-over; `carried_over` sums the other later cases.

A split fit is an evaluation, not a calibration to use: nothing is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tapeout.calibrate import REPORTED, Figures, FitSpec, case_calibration, fit_all, fit_specs, selected
from tapeout.cases import EARLIEST_SOFTWARE
from tapeout.errors import TapeoutError
from tapeout.perf.calibration import CalibrationTable, table
from tapeout.validate import Case, load_cases, predict

FLAG = "--split-date"


def parse_month(value: str, today: datetime.date | None = None) -> str:
    """A split month, checked: `YYYY-MM`, from 2015-01 to the current month.

    >>> parse_month("2024-09")
    '2024-09'
    """
    now = today or datetime.date.today()
    latest = f"{now.year:04d}-{now.month:02d}"
    span = f"give a month YYYY-MM from {EARLIEST_SOFTWARE} to {latest}"
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise TapeoutError(f"{FLAG}: {value!r} is not a month in the form YYYY-MM (month 01 to 12); {span}")
    if value > latest:
        raise TapeoutError(f"{FLAG}: {value} is in the future; {span}")
    if value < EARLIEST_SOFTWARE:
        raise TapeoutError(f"{FLAG}: {value} is before {EARLIEST_SOFTWARE}, the earliest case date; {span}")
    return value


def split_cases(cases: list[Case], month: str) -> tuple[list[Case], list[Case], list[Case]]:
    """The cases dated before `month`, those dated in it or later, and those without a date."""
    earlier: list[Case] = []
    later: list[Case] = []
    undated: list[Case] = []
    for case in cases:
        date = case.software.date if case.software is not None else None
        (undated if date is None else earlier if date < month else later).append(case)
    return earlier, later, undated


def split(
    path: Path, month: str, serving: bool = False, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Fit on the cases of `path` dated before `month` and on the undated ones, and report the
    error of that fit and of the figures in force on the later cases of the kinds `calibrate`
    reports (with `serving`, the LLM serving cases too, whose server searches are slow).
    `progress(done, total)` is called as the later cases are predicted."""
    month = parse_month(month)
    tbl = table()
    cases = load_cases(path)
    earlier, later, undated = split_cases(cases, month)
    kinds = REPORTED + (("llm_inference",) if serving else ())
    evaluated = [c for c in later if c.kind in kinds]
    _check_sides(path, month, earlier, later, evaluated, serving)
    pool = earlier + undated
    specs = fit_specs(tbl)
    figs = fit_all(tbl, specs, pool, pool)
    thin = [s for s in specs if len(selected(s, pool, tbl)) < 2]
    # An entry with too few earlier cases is left out: its cases take the next entry of their
    # hierarchy (a version's its profile's, a profile's its family's or stack's), fitted on the
    # earlier cases, which is what would have been predicted before its own cases existed. The
    # default has nothing under it and keeps its value in force, marked "kept".
    kept = [s for s in thin if s.stack == "default"]
    figs.tbl = _without(tbl, [s for s in thin if s.stack != "default"])
    rows = []
    for done, case in enumerate(evaluated):
        if progress is not None:
            progress(done, len(evaluated))
        rows.append(_row(case, tbl, figs, kept))
    skipped = Counter(c.kind for c in later if c.kind not in kinds)
    counts = {
        "cases": len(cases), "undated": len(undated), "earlier": len(earlier), "fitted_on": len(pool),
        "later": len(later), "evaluated": len(evaluated), "not_evaluated": dict(sorted(skipped.items())),
    }  # fmt: skip
    return {
        "split_date": month,
        "counts": counts,
        "figures": _figure_rows(tbl, specs, pool, figs),
        "cases": rows,
        "by_kind": _by(rows, "kind"),
        "by_confidence": _by(rows, "confidence"),
        "all": _summary(rows),
        "carried_over": _summary([r for r in rows if not r["kept"]]),
    }


def _without(tbl: CalibrationTable, specs: list[FitSpec]) -> CalibrationTable:
    """`tbl` without the entries `specs` fit."""
    gone = {(fig, spec.stack) for spec in specs for fig in spec.figures}
    entries = {
        fig: {k: v for k, v in by_key.items() if (fig, k) not in gone} for fig, by_key in tbl.entries.items()
    }
    return dataclasses.replace(tbl, entries=entries)


def _check_sides(
    path: Path, month: str, earlier: list[Case], later: list[Case], evaluated: list[Case], serving: bool
) -> None:
    """A split needs dated cases on both sides, and a later case of a kind the fit reports."""
    dates = sorted(c.software.date for c in earlier + later if c.software and c.software.date)
    where = f"{FLAG} {month}: {path}"
    if not dates:
        raise TapeoutError(f"{where}: no case has a software date, so none can be placed before or after it")
    span = f"its cases are dated {dates[0]} to {dates[-1]}"
    if not earlier:
        raise TapeoutError(f"{where}: no case is dated before it ({span}); nothing earlier to fit on")
    if not later:
        raise TapeoutError(f"{where}: no case is dated {month} or later ({span}); nothing to evaluate")
    if not evaluated:
        kinds = ", ".join(REPORTED + (("llm_inference",) if serving else ()))
        hint = "" if serving else "; --serving adds the llm_inference cases"
        raise TapeoutError(
            f"{where}: none of the {len(later)} cases dated {month} or later is of a kind the fit "
            f"reports ({kinds}){hint}"
        )


def _row(case: Case, tbl: CalibrationTable, figs: Figures, kept: list[FitSpec]) -> dict[str, Any]:
    """One later case: its error with the split fit and with the figures in force (None: the
    tool cannot predict it), and whether a figure it would inform kept its value in force."""
    assert case.software is not None and case.software.date is not None
    return {
        "id": case.id, "kind": case.kind, "confidence": case.confidence, "date": case.software.date,
        "error_split": predict(case, figs.calibration(case)).error,
        "error_current": predict(case, case_calibration(tbl, case)).error,
        "kept": any(selected(spec, [case], tbl) for spec in kept),
    }  # fmt: skip


def _figure_rows(
    tbl: CalibrationTable, specs: list[FitSpec], pool: list[Case], figs: Figures
) -> list[dict[str, Any]]:
    """Each fitted figure: the cases it was fitted on, its split value (None: too few earlier
    cases, the value in force kept) and the value in force."""
    rows = []
    for spec in specs:
        n = len(selected(spec, pool, tbl))
        current = tbl.resolve_keys((spec.stack, "default"))
        for fig in spec.figures:
            rows.append({
                "figure": fig, "stack": spec.stack, "n": n,
                "fitted": figs.values.get((fig, spec.stack)) if n >= 2 else None,
                "current": getattr(current, fig),
            })  # fmt: skip
    return rows


def _mape(rows: list[dict[str, Any]], key: str) -> float:
    """A case the figures cannot predict counts as a 100 % miss, as in `tapeout validate`."""
    return sum(1.0 if r[key] is None else abs(r[key]) for r in rows) / len(rows)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Count and MAPEs of some later cases; the MAPEs are None when there are none."""
    return {
        "n": len(rows),
        "kept": sum(1 for r in rows if r["kept"]),
        "mape_split": _mape(rows, "error_split") if rows else None,
        "mape_current": _mape(rows, "error_current") if rows else None,
    }


def _by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """A summary per value of `key` (kind, confidence)."""
    values = sorted({r[key] for r in rows})
    return {value: _summary([r for r in rows if r[key] == value]) for value in values}
