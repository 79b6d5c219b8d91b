"""A saved JSON result of `serve`, `train`, `recsys`, `cost`, `plan`, `explore`, `compile` or `study`
as a page in the study's style. The kind is recognised by the keys the command writes; anything
else is refused by name. Every number on the page is traced to its key in the file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tapeout.errors import TapeoutError
from tapeout.report.page import Sources, esc, page
from tapeout.report.study import render_study
from tapeout.study.result import RESULT_SCHEMA, Chart, Limit, Section, Series, StudyResult, Table
from tapeout.study.silicon import front_section

MAX_ROWS = 2000  # numbers listed in the table of every number: a result, not a data dump

# The keys each command's --json output always has.
KINDS: dict[str, tuple[str, ...]] = {
    "plan": ("total_tco_usd", "demands", "candidates"),
    "explore": ("designs", "front"),
    "compile": ("estimate", "fallbacks"),
    "cost": ("die_area_mm2", "cost_usd", "power_w"),
    "recsys": ("mode", "embedding_precision", "samples_per_s"),
    "serve": ("phases", "policy", "ttft_s", "tpot_s"),
    "train": ("step_time_s", "mfu", "breakdown_s"),
}


def kind_of(data: Any, origin: str) -> str:
    """Which command wrote `data`; an error naming what it knows otherwise."""
    if isinstance(data, dict) and data.get("schema") == RESULT_SCHEMA:
        return "study"
    if isinstance(data, dict):
        for kind, keys in KINDS.items():
            if all(k in data for k in keys):
                return kind
    got = ", ".join(sorted(map(str, data))[:12]) if isinstance(data, dict) else type(data).__name__
    raise TapeoutError(
        f"{origin}: not a result tapeout report knows (got {got}); it renders the --json output of "
        f"{', '.join(sorted([*KINDS, 'study']))}"
    )


def flatten(data: Any, path: str = "") -> list[tuple[str, Any]]:
    """(key path, value) of every scalar in a JSON value."""
    if isinstance(data, dict):
        return [kv for k, v in data.items() for kv in flatten(v, f"{path}.{k}" if path else str(k))]
    if isinstance(data, list):
        return [kv for i, v in enumerate(data) for kv in flatten(v, f"{path}[{i}]")]
    return [(path, data)]


def _bar(title: str, values: dict[str, Any], key: str, origin: str, y_title: str, reading: str,
         limits: tuple[Limit, ...] = ()) -> Chart:  # fmt: skip
    xs = [k for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    s = Series(name=title, x=tuple(xs), y=tuple(float(values[k]) for k in xs),
               sources=tuple(f"{origin}: {key}.{k}" for k in xs))  # fmt: skip
    return Chart(
        title=title, kind="bar", x_title="", y_title=y_title, series=(s,), reading=reading, limits=limits
    )


def _serve(d: dict[str, Any], origin: str) -> list[Chart]:
    stats = ("mean", "p50", "p90", "p99")
    series = tuple(
        Series(name=m, x=stats, y=tuple(1e3 * d[m][s] for s in stats), sources=tuple(f"{origin}: {m}.{s}" for s in stats))
        for m in ("ttft_s", "tpot_s", "e2e_s")
    )  # fmt: skip
    p = d["phases"]
    return [Chart(title="Latency percentiles", kind="bar", x_title="statistic", y_title="ms", series=series, log_y=True,
                  reading=f"{d['tokens_per_s']:,.0f} tokens/s; prefill is {p['prefill']['bound']}-bound, decode "
                  f"{p['decode']['bound']}-bound.")]  # fmt: skip


def _train(d: dict[str, Any], origin: str) -> list[Chart]:
    big = max(d["breakdown_s"], key=lambda k: d["breakdown_s"][k])
    return [
        _bar("Step time by part", d["breakdown_s"], "breakdown_s", origin, "s",
             f"A step takes {d['step_time_s']:,.3g} s at MFU {100 * d['mfu']:.1f} %; most of it is {big}."),
        _bar("Memory per chip", d["memory_per_chip_gb"], "memory_per_chip_gb", origin, "GB",
             "What each chip holds of the model, its training state and activations."),
    ]  # fmt: skip


def _cost(d: dict[str, Any], origin: str) -> list[Chart]:
    p = d["power_w"]
    return [
        _bar("Die area by block", d["area_mm2"], "area_mm2", origin, "mm²", f"The die is {d['die_area_mm2']:,.0f} mm²."),
        _bar("Unit cost by part", d["cost_usd"], "cost_usd", origin, "US dollars",
             f"One unit costs ${d['unit_cost_usd']:,.0f}, yield {100 * d['yield']:.0f} %."),
        _bar("Power at full load", {k: p[k] for k in ("compute", "memory", "idle", "full_load")}, "power_w", origin,
             "W", f"Full load {p['full_load']:,.0f} W against a budget of {p['budget']:,.0f} W.",
             (Limit(axis="y", value=float(p["budget"]), label="budget (TDP)"),)),
    ]  # fmt: skip


def _plan(d: dict[str, Any], origin: str) -> list[Chart]:
    charts = []
    for i, dem in enumerate(d["demands"]):
        alts = [(j, a) for j, a in enumerate(dem["alternatives"]) if "error" not in a]
        s = Series(name=str(dem["demand"]), x=tuple(a["candidate"] for _, a in alts),
                   y=tuple(a["tco_usd"] / 1e6 for _, a in alts),
                   sources=tuple(f"{origin}: demands[{i}].alternatives[{j}].tco_usd" for j, _ in alts),
                   notes=tuple(f"{a['chips']:,} chips" for _, a in alts))  # fmt: skip
        chosen = ", ".join(f"{f['chips']:,} x {f['candidate']}" for f in dem["fleet"])
        charts.append(Chart(title=f"{dem['demand']}: TCO on each candidate alone", kind="bar", x_title="candidate",
                            y_title="TCO, $M", series=(s,), reading=f"The plan chooses {chosen}."))  # fmt: skip
    return charts


CHARTS: dict[str, Callable[[dict[str, Any], str], list[Chart]]] = {
    "serve": _serve, "train": _train, "cost": _cost, "plan": _plan,
    "recsys": lambda d, o: [], "compile": lambda d, o: [], "explore": lambda d, o: [],
}  # fmt: skip


def render_result(data: Any, origin: str) -> str:
    """The page of a saved result (`origin`: the file it came from)."""
    kind = kind_of(data, origin)
    if kind == "study":
        return render_study(StudyResult.from_dict(data))
    sections = []
    if kind == "explore":
        sections.append(front_section(data, origin))
    charts = tuple(CHARTS[kind](data, origin))
    if charts:
        sections.append(Section(key="charts", title="Charts", charts=charts))
    numbers = [(k, v) for k, v in flatten(data) if v is not None and not isinstance(v, bool)][:MAX_ROWS]
    sections.append(Section(key="numbers", title="Every value in the file", tables=(
        Table(title=f"{origin}", columns=("key", "value"), rows=tuple((k, v) for k, v in numbers),
              sources=tuple(f"{origin}: {k}" for k, _ in numbers)),)))  # fmt: skip
    title = f"tapeout {kind}: {origin}"

    def header(sources: Sources) -> str:
        what = ", ".join(
            f"{k} {esc(data[k])}"
            for k in ("model", "hardware", "id", "target")
            if isinstance(data.get(k), str)
        )
        return f'<h1>{esc(title)}</h1><p class="meta">the --json output of tapeout {kind}{"; " + what if what else ""}</p>'

    return page(title, header, tuple(sections))
