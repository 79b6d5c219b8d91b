"""What a study returns: sections of tables and charts, each number with the command or result it
came from, and the headline. Plain values that serialise to JSON (`as_dict`) and read back
(`StudyResult.from_dict`), so `tapeout report STUDY.json` draws the same page again.

The report (`tapeout.report`) only draws these: which numbers a chart shows, what it says in one
line and where each number came from are decided here, next to the code that computed them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tapeout.errors import TapeoutError

RESULT_SCHEMA = "tapeout-study-result/1"

Cell = str | float | int | None
ChartKind = Literal["bar", "stack", "scatter", "line"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    """One trace of a chart: points (x, y), each with the source of its numbers and a hover note."""

    name: str
    x: tuple[Cell, ...]
    y: tuple[float | None, ...]
    sources: tuple[str, ...]  # one per point
    notes: tuple[str, ...] = ()  # one per point (what the point is), or none
    error_low: tuple[float, ...] = ()  # bars: how far below y the band reaches, per point
    error_high: tuple[float, ...] = ()
    mode: Literal["markers", "lines", "lines+markers"] = "markers"

    def __post_init__(self) -> None:
        n = len(self.x)
        for name in ("y", "sources", "notes", "error_low", "error_high"):
            got = len(getattr(self, name))
            assert got == n or (got == 0 and name in ("notes", "error_low", "error_high")), (name, got, n)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """A horizontal or vertical line on a chart: a latency limit, a peak."""

    axis: Literal["x", "y"]
    value: float
    label: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """A chart and the one line that says what it shows."""

    title: str
    kind: ChartKind
    x_title: str
    y_title: str
    series: tuple[Series, ...]
    reading: str
    log_x: bool = False
    log_y: bool = False
    limits: tuple[Limit, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    """Rows of numbers; `sources[i]` is where row i came from."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    sources: tuple[str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        assert len(self.rows) == len(self.sources), (self.title, len(self.rows), len(self.sources))
        assert all(len(r) == len(self.columns) for r in self.rows), self.title


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """One part of the page. `missing` says why a section has no content (an input not given, an
    optional extra not installed, and how to install it)."""

    key: str
    title: str
    intro: str = ""
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()
    missing: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Headline:
    """The answer in one sentence, and the figures behind it."""

    text: str
    figures: dict[str, float | str | None] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyResult:
    """A study's result: its name and notes as given, the headline, and the sections in page order."""

    name: str
    notes: str
    origin: str  # the study file, or the bundled flagship
    version: str
    seconds: float
    headline: Headline
    sections: tuple[Section, ...]
    data: dict[str, Any] = field(default_factory=dict)  # the raw results the sections cite (plan, cost...)
    schema: str = RESULT_SCHEMA

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyResult:
        """Read a result back from its JSON; a file of another kind is refused by name."""
        if d.get("schema") != RESULT_SCHEMA:
            raise TapeoutError(f"field 'schema': expected {RESULT_SCHEMA!r}, got {d.get('schema')!r}")
        try:
            sections = tuple(_section(s) for s in d["sections"])
            return cls(name=str(d["name"]), notes=str(d["notes"]), origin=str(d["origin"]),
                       version=str(d["version"]), seconds=float(d["seconds"]),
                       headline=Headline(**d["headline"]), sections=sections, data=dict(d.get("data") or {}))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise TapeoutError(f"not a whole {RESULT_SCHEMA} result: {type(exc).__name__}: {exc}") from None


def _section(s: dict[str, Any]) -> Section:
    tables = tuple(
        Table(title=t["title"], columns=tuple(t["columns"]), rows=tuple(tuple(r) for r in t["rows"]),
              sources=tuple(t["sources"]), note=t.get("note", ""))
        for t in s.get("tables", ())
    )  # fmt: skip
    charts = tuple(
        Chart(**{**c, "series": tuple(_series(x) for x in c["series"]),
                 "limits": tuple(Limit(**x) for x in c.get("limits", ()))})
        for c in s.get("charts", ())
    )  # fmt: skip
    return Section(key=s["key"], title=s["title"], intro=s.get("intro", ""), tables=tables, charts=charts,
                   missing=s.get("missing"), notes=tuple(s.get("notes", ())))  # fmt: skip


def _series(x: dict[str, Any]) -> Series:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}
    return Series(**fields)
