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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapeout.perf.calibration import CALIBRATION_FILE, Calibration, CalibrationTable, table
from tapeout.validate import Case, load_cases, predict

EIGHT_BIT = ("fp8", "int8", "fp4")
JOINT = {"attention": ("attention", "attention_overhead_blocks")}
# Search interval and tolerance of figures that are not fractions.
RANGES = {"serving_pj_per_flop": (0.5, 5.0, 5e-3), "training_pj_per_flop": (0.3, 5.0, 5e-3)}
# Figures fitted on the absolute relative error (the median case), not its square: the serving
# cases include a few that miss for reasons no figure can fix (an unstated power limit or
# parallelism), and a squared loss would let them pull every other case.
ABSOLUTE_LOSS = frozenset({"serving_pj_per_flop", "training_pj_per_flop"})


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
    return None


@dataclass(frozen=True, slots=True)
class FitSpec:
    figures: tuple[str, ...]
    group: str
    stack: str  # a stack name, or "default"


def _fit_specs(tbl: CalibrationTable) -> list[FitSpec]:
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


def _sourced_stacks(tbl: CalibrationTable, figure: str) -> set[str]:
    entries = tbl.raw["figures"][figure]
    return {s for s, e in entries.items() if isinstance(e, dict) and "source" in e}


def _selected(spec: FitSpec, cases: list[Case], tbl: CalibrationTable) -> list[Case]:
    out = []
    for case in cases:
        if _case_group(case) != spec.group:
            continue
        stack = tbl.stack(case.chip.family)
        if spec.stack == "default":
            if stack not in _sourced_stacks(tbl, spec.figures[0]):
                out.append(case)
        elif stack == spec.stack:
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
        stack = self.tbl.stack(case.chip.family)
        cal = self.tbl.for_family(case.chip.family)
        overrides: dict[str, float] = {}
        for (fig, st), value in self.values.items():
            has_own = stack in self.tbl.raw["figures"][fig]
            if st == stack or (st == "default" and not has_own):
                overrides[fig] = value
        if trial:
            overrides.update(trial)
        return cal.with_values(**overrides)

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
            x = _golden(lambda v: loss({first: v}), lo, hi, tol)
            return {first: x}
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


def calibrate(path: Path, write: bool = False, serving: bool = False) -> dict[str, Any]:
    """Fit every `fit:` figure on the cases of `path`; report fitted values and errors (of the
    op cases; with `serving`, of the LLM serving cases too, whose refits take minutes)."""
    tbl = table()
    cases = load_cases(path)
    specs = _fit_specs(tbl)

    def fit_all(pool: list[Case], start: Figures | None = None, only_with: Case | None = None) -> Figures:
        figs = Figures(tbl)
        if start is not None:
            figs.values = dict(start.values)
        for spec in specs:
            if only_with is not None and only_with not in _selected(spec, cases, tbl):
                continue  # a fit that never saw the held-out case keeps its full-data value
            chosen = _selected(spec, pool, tbl)
            # Production figures need two cases; a held-out refit may rest on one.
            if len(chosen) < (1 if only_with is not None else 2):
                for fig in spec.figures:  # fall back to the default figure
                    figs.values.pop((fig, spec.stack), None)
                continue
            for fig, value in figs.fit(spec, chosen).items():
                figs.values[(fig, spec.stack)] = value
        return figs

    full = fit_all(cases)
    rows = []
    for spec in specs:
        n = len(_selected(spec, cases, tbl))
        for fig in spec.figures:
            current = tbl.default if spec.stack == "default" else tbl.stacks[spec.stack]
            rows.append({
                "figure": fig, "stack": spec.stack, "n": n,
                "fitted": full.values.get((fig, spec.stack), getattr(current, fig)),
                "current": getattr(current, fig),
            })  # fmt: skip

    fitted_ids = {c.id for spec in specs for c in _selected(spec, cases, tbl)}
    per_case: list[dict[str, Any]] = []
    for case in cases:
        kinds = ("gemm", "attention", "memory", "collective", "llm_training")
        if case.kind not in kinds + (("llm_inference",) if serving else ()):
            continue
        in_sample = predict(case, full.calibration(case)).error
        if in_sample is None:
            continue  # `tapeout validate` reports it, with the reason, as a miss
        if case.id in fitted_ids:
            held = fit_all([c for c in cases if c.id != case.id], start=full, only_with=case)
            held_out = predict(case, held.calibration(case)).error
        else:
            held_out = in_sample
        assert in_sample is not None
        assert held_out is not None
        per_case.append(
            {"id": case.id, "in_sample": in_sample, "held_out": held_out, "fitted_on": case.id in fitted_ids}
        )
    if write:
        _write(full.values)
    n = len(per_case)
    return {
        "figures": rows,
        "cases": per_case,
        "mape_in_sample": sum(abs(c["in_sample"]) for c in per_case) / n,
        "mape_held_out": sum(abs(c["held_out"]) for c in per_case) / n,
        "by_kind": _by_kind(cases, per_case),
    }


def _by_kind(cases: list[Case], per_case: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    kind_of = {c.id: c.kind for c in cases}
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({kind_of[c["id"]] for c in per_case}):
        rows = [c for c in per_case if kind_of[c["id"]] == kind]
        out[kind] = {
            "n": len(rows),
            "mape_in_sample": sum(abs(c["in_sample"]) for c in rows) / len(rows),
            "mape_held_out": sum(abs(c["held_out"]) for c in rows) / len(rows),
        }
    return out


def _write(values: dict[tuple[str, str], float]) -> None:
    """Replace fitted values in place, keeping the file's comments and layout."""
    lines = CALIBRATION_FILE.read_text(encoding="utf-8").splitlines(keepends=True)
    figure = None
    for i, line in enumerate(lines):
        top = re.match(r"^  ([a-z0-9_]+):\s*$", line)
        if top:
            figure = top.group(1)
            continue
        entry = re.match(r"^    ([a-z0-9_]+): \{value: ([0-9.]+)(.*)$", line)
        if figure and entry and (figure, entry.group(1)) in values:
            value = values[(figure, entry.group(1))]
            lines[i] = f"    {entry.group(1)}: {{value: {value:.3f}{entry.group(3)}\n"
    CALIBRATION_FILE.write_text("".join(lines), encoding="utf-8")
    table.cache_clear()
