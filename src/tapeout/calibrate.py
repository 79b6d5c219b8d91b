"""Re-derive the efficiency figures of `perf/calibration.yaml` from public cases alone.

Every figure entry marked `fit: KIND/SUBSET/STACK` is the value that minimises the sum of
squared relative errors over the cases it selects (absolute errors for the figures in
`ABSOLUTE_LOSS`), all other figures held at their values in
the file. `STACK` is a software stack, or `all` for the default: the pooled fit over every stack
whose own figure is not taken from another source. Fits run one after another in file order;
`attention` and `attention_overhead_blocks` share a selection and are fitted jointly.

A figure is fitted on the `confirmed` cases it selects when there are at least two: a
measurement whose configuration the case file marks as uncertain (`secondary`, `unconfirmed`)
is predicted and reported, but does not pull a figure that confirmed measurements can set.

Held-out error: each fitted case is predicted with its figures refitted without it
(leave-one-out); a case no figure was fitted on is held out by construction.

Writing: the fit goes to a calibration file the user names (`write_calibration`), never to the
package's own file, as a copy of the file in force with the fitted values replaced. It is
checked as any calibration file is when read, written atomically, and refused when its held-out
MAPE is worse than the MAPE of the figures in force on the same cases (unless forced).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapeout.calibration_file import check_target, write_calibration
from tapeout.errors import TapeoutError
from tapeout.perf.calibration import Calibration, CalibrationTable, active_file, table
from tapeout.validate import Case, load_cases, predict

__all__ = ["calibrate", "check_target", "write_calibration"]

EIGHT_BIT = ("fp8", "int8", "fp4")
JOINT = {"attention": ("attention", "attention_overhead_blocks")}
# Search interval and tolerance of figures that are not fractions.
RANGES = {"kernel_overhead_us": (0.0, 100.0, 0.05)}
# Figures fitted on the absolute relative error (the median case), not its square: the workload
# cases include a few that miss for reasons no figure can fix (an unstated power limit or
# parallelism), and a squared loss would let them pull every other case.
ABSOLUTE_LOSS = frozenset({"serving_efficiency", "training_efficiency"})


def _case_group(case: Case) -> str | None:
    """Which fit subset a case can inform: 'gemm/16bit', 'collective/link', ..."""
    if case.kind == "gemm":
        return "gemm/8bit" if case.precision in EIGHT_BIT else "gemm/16bit"
    if case.kind in ("attention", "memory"):
        return case.kind
    if case.kind == "collective":
        system = case.system()
        if case.chips > system.scale_up_domain:
            return None  # crosses the scale-out network: never fitted, always held out
        up = case.chip.scale_up
        switch_reduce = up is not None and up.in_switch_reduction and up.topology == "switch"
        p = case.params
        if p.op == "all_reduce" and (p.algorithm == "nvls" or (p.algorithm == "auto" and switch_reduce)):
            return "collective/nvls"
        return "collective/link"
    if case.kind == "llm_inference" and case.params.scenario != "server":
        return "llm_inference"  # server cases search a rate: too slow to refit, always held out
    if case.kind == "llm_training":
        return "llm_training"
    if case.kind == "recsys_inference" and case.params.scenario != "server":
        return "recsys_inference"  # server cases search a rate, as LLM serving's: held out
    if case.kind == "recsys_training":
        return "recsys_training"
    return None


def case_keys(tbl: CalibrationTable, case: Case) -> tuple[str, ...]:
    """The entries a case's figures come from, most specific first: its software's version,
    profile and family, its chip's stack, the default."""
    return tbl.profile(case.chip.family, case.software, case.workload).keys


def case_calibration(
    tbl: CalibrationTable, case: Case, values: Mapping[tuple[str, str], float] | None = None
) -> Calibration:
    """The figures a case runs with, `values` ((figure, entry) -> value) replacing the file's."""
    return tbl.resolve_keys(case_keys(tbl, case), values)


@dataclass(frozen=True, slots=True)
class FitSpec:
    figures: tuple[str, ...]
    group: str
    stack: str  # a stack name, or "default"


def fit_specs(tbl: CalibrationTable) -> list[FitSpec]:
    """One fit per `fit:` entry of the file in force, in file order; a joint fit once."""
    specs: list[FitSpec] = []
    joint_members = {m for ms in JOINT.values() for m in ms[1:]}
    for name, entries in tbl.raw["figures"].items():
        if name in joint_members:
            continue
        for stack, entry in entries.items():
            if not isinstance(entry, dict) or "fit" not in entry:
                continue
            kind_subset, _, which = entry["fit"].rpartition("/")
            specs.append(
                FitSpec(JOINT.get(name, (name,)), kind_subset, "default" if which == "all" else stack)
            )
    return specs


def selected(spec: FitSpec, cases: list[Case], tbl: CalibrationTable) -> list[Case]:
    """The cases of `cases` that `spec` is fitted on (the confirmed ones, when two are)."""
    entries = tbl.raw["figures"][spec.figures[0]]
    sourced = {s for s, e in entries.items() if isinstance(e, dict) and "source" in e}
    out = []
    for case in cases:
        if _case_group(case) != spec.group:
            continue
        if spec.stack == "default":
            if tbl.stack(case.chip.family) not in sourced:
                out.append(case)
        elif spec.stack in (keys := case_keys(tbl, case)):  # its stack, or its software's family or profile
            # A stack's or family's entry is fitted on all its cases; a profile's only on those
            # that take it (no more specific entry of theirs, a version's or an era's, has one).
            own = next(k for k in keys if k in entries)
            if own == spec.stack or spec.stack.partition("@")[0] not in tbl.profiles:
                out.append(case)
    confirmed = [c for c in out if c.confidence == "confirmed"]
    return confirmed if len(confirmed) >= 2 else out


def _golden(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-4) -> float:
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


class Figures:
    """The figures in force while fitting: per stack and the default, overridable."""

    def __init__(self, tbl: CalibrationTable) -> None:
        self.tbl = tbl
        self.values: dict[tuple[str, str], float] = {}

    def calibration(self, case: Case, trial: dict[str, float] | None = None) -> Calibration:
        cal = case_calibration(self.tbl, case, self.values)
        return cal.with_values(**trial) if trial else cal

    def fit(self, spec: FitSpec, cases: list[Case]) -> dict[str, float]:
        absolute = spec.figures[0] in ABSOLUTE_LOSS

        def loss(trial: dict[str, float]) -> float:
            total = 0.0
            for case in cases:
                r = predict(case, self.calibration(case, trial))
                if r.error is None:
                    continue  # a case the tool cannot predict informs no figure
                total += abs(r.error) if absolute else r.error**2
            return total

        first = spec.figures[0]
        if len(spec.figures) == 1:
            lo, hi, tol = RANGES.get(first, (0.05, 1.0, 1e-4))
            return {first: _golden(lambda v: loss({first: v}), lo, hi, tol)}
        second = spec.figures[1]
        best: tuple[float, float, float] | None = None
        for step in range(0, 25):
            o = step / 4

            def at(v: float, o: float = o) -> float:
                return loss({first: v, second: o})

            x = _golden(at, 0.05, 1.0)
            value = at(x)
            if best is None or value < best[0] - 1e-12:
                best = (value, x, o)
        assert best is not None
        return {first: best[1], second: best[2]}


def fit_all(
    tbl: CalibrationTable,
    specs: list[FitSpec],
    cases: list[Case],
    pool: list[Case],
    start: Figures | None = None,
    only_with: Case | None = None,
) -> Figures:
    """Every spec fitted on `pool`, in file order; a held-out refit (`only_with`) redoes only the
    fits that selected the held-out case, from the full fit `start`."""
    figs = Figures(tbl)
    if start is not None:
        figs.values = dict(start.values)
    for spec in specs:
        if only_with is not None and only_with not in selected(spec, cases, tbl):
            continue  # a fit that never saw the held-out case keeps its full-data value
        chosen = selected(spec, pool, tbl)
        # Production figures need two cases; a held-out refit may rest on one.
        if len(chosen) < (1 if only_with is not None else 2):
            for fig in spec.figures:  # fall back to the default figure
                figs.values.pop((fig, spec.stack), None)
            continue
        for fig, value in figs.fit(spec, chosen).items():
            figs.values[(fig, spec.stack)] = value
    return figs


def _figure_rows(
    tbl: CalibrationTable, specs: list[FitSpec], cases: list[Case], full: Figures
) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        n = len(selected(spec, cases, tbl))
        for fig in spec.figures:
            current = tbl.resolve_keys((spec.stack, "default"))
            rows.append({
                "figure": fig, "stack": spec.stack, "n": n,
                "fitted": full.values.get((fig, spec.stack), getattr(current, fig)),
                "current": getattr(current, fig),
            })  # fmt: skip
    return rows


REPORTED = (
    "gemm",
    "attention",
    "memory",
    "collective",
    "llm_training",
    "recsys_inference",
    "recsys_training",
)


def _per_case(
    tbl: CalibrationTable, specs: list[FitSpec], cases: list[Case], full: Figures, serving: bool,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """In-sample and held-out error of every reported case the tool predicts."""
    fitted_ids = {c.id for spec in specs for c in selected(spec, cases, tbl)}
    per_case: list[dict[str, Any]] = []
    for done, case in enumerate(cases):
        if progress is not None:
            progress(done, len(cases))
        if case.kind not in REPORTED + (("llm_inference",) if serving else ()):
            continue
        in_sample = predict(case, full.calibration(case)).error
        if in_sample is None:
            continue  # `tapeout validate` reports it, with the reason, as a miss
        if case.id in fitted_ids:
            held = fit_all(
                tbl, specs, cases, [c for c in cases if c.id != case.id], start=full, only_with=case
            )
            held_out = predict(case, held.calibration(case)).error
        else:
            held_out = in_sample
        assert held_out is not None
        per_case.append(
            {"id": case.id, "in_sample": in_sample, "held_out": held_out, "fitted_on": case.id in fitted_ids}
        )
    return per_case


def _current_mape(tbl: CalibrationTable, cases: list[Case], per_case: list[dict[str, Any]]) -> float:
    """MAPE of the figures in force over the cases of `per_case`; a case they cannot predict
    counts as a 100 % miss, as in `tapeout validate`."""
    by_id = {c.id: c for c in cases}
    errors = [predict(by_id[r["id"]], case_calibration(tbl, by_id[r["id"]])).error for r in per_case]
    return sum(1.0 if e is None else abs(e) for e in errors) / len(errors)


def calibrate(
    path: Path,
    write: Path | None = None,
    serving: bool = False,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fit every `fit:` figure on the cases of `path`; report fitted values and errors (of the
    op cases; with `serving`, of the LLM serving cases too, whose refits take minutes), beside
    the error of the figures in force (`mape_current`).

    With `write`, the file in force with the fitted values goes to that path (never the
    package's own file), unless the fit's held-out MAPE is worse than `mape_current` and not
    `force`. `progress(done, total)` is called as the held-out refits go, case by case."""
    if isinstance(write, bool):  # the old flag: the file it rewrote is the package's own
        raise TapeoutError("write: give the path of the calibration file to write")
    if write is not None:
        check_target(write, cases=path)  # before the fit, which can take minutes
    tbl = table()
    cases = load_cases(path)
    specs = fit_specs(tbl)
    full = fit_all(tbl, specs, cases, cases)
    per_case = _per_case(tbl, specs, cases, full, serving, progress)
    if not per_case:
        raise TapeoutError(
            f"{path}: no case the fit reports (kinds: {', '.join(REPORTED)}) could be predicted"
        )
    result: dict[str, Any] = {
        "figures": _figure_rows(tbl, specs, cases, full),
        "cases": per_case,
        "mape_in_sample": _mape(per_case, "in_sample"),
        "mape_held_out": _mape(per_case, "held_out"),
        "mape_current": _current_mape(tbl, cases, per_case),
        "by_kind": _by_kind(cases, per_case),
    }
    if write is not None:
        forced = _refuse_if_worse(result, force)
        result["written"] = str(write_calibration(full.values, write, cases=path))
        if forced:
            result["forced"] = True
    return result


def _mape(rows: list[dict[str, Any]], key: str) -> float:
    return float(sum(abs(r[key]) for r in rows)) / len(rows)


def _by_kind(cases: list[Case], per_case: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    kind_of = {c.id: c.kind for c in cases}
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({kind_of[c["id"]] for c in per_case}):
        rows = [c for c in per_case if kind_of[c["id"]] == kind]
        out[kind] = {
            "n": len(rows),
            "mape_in_sample": _mape(rows, "in_sample"),
            "mape_held_out": _mape(rows, "held_out"),
        }
    return out


def _refuse_if_worse(result: dict[str, Any], force: bool) -> bool:
    """Whether the fit predicts unseen cases worse than the figures in force do; refused then,
    unless `force`. Held-out, not in-sample: a fit always matches its own cases best."""
    held, current = result["mape_held_out"], result["mape_current"]
    if held <= current:
        return False
    if not force:
        raise TapeoutError(
            f"nothing written: the fit's held-out (leave-one-out) MAPE {100 * held:.1f}% is worse than "
            f"the {100 * current:.1f}% the figures in force ({active_file()}) give on the same "
            f"{len(result['cases'])} cases; --force writes it anyway"
        )
    return True
