"""How sure we are: the public validation cases (`tapeout validate --json`), their error by kind and
by the date of the software that ran them, with the cases behind each figure; and each kind's
error at the study's quantile, the band the headline carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tapeout.study.result import Chart, Section, Series, Table
from tapeout.validate import PUBLIC_CASES, CaseResult, load_cases, predict, summarize

VALIDATE = "tapeout validate --json"
UNDATED = "no software date"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    id: str
    kind: str
    software: str
    year: str
    confidence: str
    measured: float
    predicted: float | None
    error: float | None  # signed, a fraction; None: unsupported (counts as 100 %)

    @property
    def ape(self) -> float:
        return 1.0 if self.error is None else abs(self.error)


def cases() -> list[Case]:
    """Every public case predicted with the figures in force."""
    out = []
    for c in load_cases(PUBLIC_CASES):
        r = predict(c)
        date = c.software.date if c.software is not None else None
        out.append(Case(id=r.id, kind=r.kind, software=r.software or "-", year=str(date)[:4] if date else UNDATED,
                        confidence=r.confidence, measured=r.measured, predicted=r.predicted, error=r.error))  # fmt: skip
    return out


def band_errors(rows: list[Case], quantile: float) -> dict[str, float]:
    """Per kind: the absolute error that `quantile` of its cases stay within."""
    kinds = sorted({c.kind for c in rows})
    return {k: float(np.quantile([c.ape for c in rows if c.kind == k], quantile)) for k in kinds}


def _group_chart(rows: list[Case], key: str, title: str, x_title: str, quantile: float) -> Chart:
    groups = sorted({getattr(c, key) for c in rows}, key=lambda g: (g == UNDATED, g))
    members = {g: [c for c in rows if getattr(c, key) == g] for g in groups}

    def series(name: str, value: str) -> Series:
        ys = tuple(
            100 * (float(np.mean([c.ape for c in members[g]])) if value == "mape"
                   else float(np.quantile([c.ape for c in members[g]], quantile)))
            for g in groups
        )  # fmt: skip
        return Series(name=name, x=tuple(groups), y=ys,
                      sources=tuple(f"{VALIDATE}: cases {', '.join(c.id for c in members[g])}" for g in groups),
                      notes=tuple(f"{len(members[g])} cases" for g in groups))  # fmt: skip

    worst = max(groups, key=lambda g: float(np.mean([c.ape for c in members[g]])))
    return Chart(title=title, kind="bar", x_title=x_title, y_title="absolute error, %",
                 series=(series("mean (MAPE)", "mape"), series(f"{100 * quantile:g}th percentile", "q")),
                 reading=f"The largest mean error is {worst} ({100 * float(np.mean([c.ape for c in members[worst]])):.1f} % "
                 f"over {len(members[worst])} cases); hovering a bar lists its cases.")  # fmt: skip


def confidence(rows: list[Case], errors: dict[str, float], quantile: float) -> Section:
    """The section: charts by kind and by software year, the summary by confidence, every case."""
    s = summarize_rows(rows)
    conf = Table(title="By confidence of the measurement",
                 columns=("confidence", "cases", "MAPE, %"),
                 rows=tuple((k, v["n"], 100 * v["mape"]) for k, v in s["by_confidence"].items()),
                 sources=tuple(f"{VALIDATE}: summary.by_confidence.{k}" for k in s["by_confidence"]))  # fmt: skip
    band = Table(title=f"The band carried into the headline: {100 * quantile:g}th percentile absolute error by kind",
                 columns=("kind", "error, %", "cases"),
                 rows=tuple((k, 100 * e, sum(1 for c in rows if c.kind == k)) for k, e in errors.items()),
                 sources=tuple(f"{VALIDATE}: cases of kind {k}" for k in errors))  # fmt: skip
    each = Table(title="Every case", columns=("case", "kind", "software", "measured", "predicted", "error, %"),
                 rows=tuple((c.id, c.kind, c.software, c.measured, c.predicted,
                             None if c.error is None else 100 * c.error) for c in rows),
                 sources=tuple(f"{VALIDATE}: cases[{i}]" for i in range(len(rows))))  # fmt: skip
    return Section(
        key="confidence", title="How sure we are",
        intro=f"Every prediction method on this page is checked against {len(rows)} public measurements: MAPE "
        f"{100 * s['mape']:.1f} %, {100 * s['within_10pct']:.0f} % of cases within 10 %. The savings above carry "
        f"each kind's {100 * quantile:g}th-percentile error as their band.",
        charts=(_group_chart(rows, "kind", "Validation error by kind", "kind", quantile),
                _group_chart(rows, "year", "Validation error by software date", "year of the software", quantile)),
        tables=(band, conf, each),
    )  # fmt: skip


def summarize_rows(rows: list[Case]) -> dict[str, Any]:
    """The summary `tapeout validate --json` prints, from these rows."""
    return summarize(
        [CaseResult(c.id, c.kind, "", c.measured, c.predicted, None, c.confidence) for c in rows]
    )
