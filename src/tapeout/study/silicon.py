"""Our chips' die (area by block, yield, unit cost by part, power; `cost.api.cost`) and the Pareto
front of the design space around them when the study names an exploration store
(`tapeout explore show DIR --json`)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from tapeout._yaml import load_data_file
from tapeout.cost.api import cost
from tapeout.errors import TapeoutError
from tapeout.plan.fleet import FleetPlan
from tapeout.study.result import Chart, Limit, Section, Series, Table

MAX_POINTS = 5000  # designs drawn from a store: enough to see the cloud, small enough for the page


def _cost_cmd(chip: str, volume: int | None) -> str:
    return f"tapeout cost {chip}" + (f" --volume {volume}" if volume else "") + " --json"


def die(fleet: FleetPlan, ours: tuple[str, ...]) -> tuple[Section, dict[str, Any]]:
    """The die section of our candidates, each costed at the volume the plan priced it at."""
    priced = {p.key: p for p in fleet.candidates}
    costs = {k: cost(priced[k].chip.id, volume=priced[k].volume) for k in ours}
    src = {k: _cost_cmd(priced[k].chip.id, priced[k].volume) for k in ours}
    blocks = list(next(iter(costs.values()))["area_mm2"])
    area = tuple(
        Series(name=k, x=tuple(blocks), y=tuple(c["area_mm2"][b] for b in blocks),
               sources=tuple(f"{src[k]}: area_mm2.{b}" for b in blocks))
        for k, c in costs.items()
    )  # fmt: skip
    parts = list(next(iter(costs.values()))["cost_usd"])
    unit = tuple(
        Series(name=part, x=tuple(costs), y=tuple(c["cost_usd"][part] for c in costs.values()),
               sources=tuple(f"{src[k]}: cost_usd.{part}" for k in costs))
        for part in parts
    )  # fmt: skip
    power = tuple(
        Series(name=part, x=tuple(costs), y=tuple(c["power_w"][part] for c in costs.values()),
               sources=tuple(f"{src[k]}: power_w.{part}" for k in costs))
        for part in ("compute", "memory", "idle")
    )  # fmt: skip
    big = max(costs, key=lambda k: costs[k]["die_area_mm2"])
    top = max(costs, key=lambda k: costs[k]["unit_cost_usd"])
    dearest = max(parts, key=lambda p: costs[top]["cost_usd"][p])
    charts = (
        Chart(title="Die area by block", kind="bar", x_title="block", y_title="mm²", series=area,
              reading=f"{big} is the larger die, {costs[big]['die_area_mm2']:,.0f} mm²; the largest blocks: "
              + "; ".join(f"{k}: {_largest(c['area_mm2'])}" for k, c in costs.items()) + "."),
        Chart(title="Unit cost by part", kind="stack", x_title="chip", y_title="US dollars per unit", series=unit,
              reading=f"The largest part of {top}'s ${costs[top]['unit_cost_usd']:,.0f} is {dearest.replace('_', ' ')}, "
              f"${costs[top]['cost_usd'][dearest]:,.0f}."),
        Chart(title="Power at full load by part", kind="stack", x_title="chip", y_title="W", series=power,
              reading="Full load against each chip's power budget (TDP): where the bars pass it, a full matrix "
              "load runs at a lower clock (the sustained clock in the table).",
              limits=tuple(Limit(axis="y", value=c["power_w"]["budget"], label=f"{k} budget") for k, c in costs.items())),
    )  # fmt: skip
    rows = tuple(
        (k, c["die_area_mm2"], c["dies_per_wafer"], 100 * c["yield"], c["manufacturing_usd"], c["nre_usd"] / 1e6,
         c["volume"], c["unit_cost_usd"], c["power_w"]["full_load"], c["power_w"]["budget"],
         100 * c["power_w"]["sustained_clock"])
        for k, c in costs.items()
    )  # fmt: skip
    table = Table(title="Our chips' die, cost and power",
                  columns=("chip", "die, mm²", "dies per wafer", "yield, %", "manufacturing, $", "NRE, $M",
                           "volume, units", "unit cost, $", "full load, W", "budget, W", "sustained clock, %"),
                  rows=rows, sources=tuple(src[k] for k in costs),
                  note="Volume: the chips the plan needs of each design to serve alone every demand it can.")  # fmt: skip
    return Section(key="die", title="Our chips' die", tables=(table,), charts=charts,
                   intro="Area, yield, unit cost and power follow from each design's compute, SRAM, memory and "
                   "links through the cost model; none of them is typed in."), costs  # fmt: skip


def _largest(area: dict[str, float]) -> str:
    a, b = sorted(area, key=lambda k: -area[k])[:2]
    return f"{a.replace('_', ' ')} {area[a]:,.0f} and {b.replace('_', ' ')} {area[b]:,.0f} mm²"


SPACE_SCHEMA = "tapeout-space/1"


def _read_store(path: Path) -> dict[str, Any]:
    """`tapeout explore show DIR --json` of a store folder, or such a JSON file as saved; or a
    space file (`tapeout-space/1`), swept here into a temporary store (one process)."""
    if path.is_file():
        data = load_data_file(path)
        if isinstance(data, dict) and data.get("schema") == SPACE_SCHEMA:
            import tempfile

            from tapeout.explore import explore  # imported here: exploration is optional in a study

            with tempfile.TemporaryDirectory(prefix="tapeout-study-") as tmp:
                return explore(path, out=Path(tmp) / "space.explore", workers=1).as_dict()
    elif path.is_dir():
        from tapeout.explore import show  # imported here: exploration is optional in a study

        data = show(path).as_dict()
    else:
        raise TapeoutError(f"field 'exploration': {path} is neither a results store folder nor a JSON file")
    if not isinstance(data, dict) or not isinstance(data.get("designs"), list):
        raise TapeoutError(f"field 'exploration': {path} is not the output of `tapeout explore show --json`")
    return data


TITLE = "The design space around them"


def pareto(path: Path | None) -> Section:
    """The designs of an exploration store on its first two objectives, the front marked."""
    if path is None:
        return Section(key="pareto", title=TITLE, missing="no exploration given (add `exploration:` to the "
                       "study: a space file, or a folder written by `tapeout explore`)")  # fmt: skip
    sweep = path.is_file() and path.suffix in (".yaml", ".yml")
    if sweep and importlib.util.find_spec("pyarrow") is None:  # the sweep's results store
        return Section(key="pareto", title=TITLE, missing="sweeping the design space needs the explore "
                       "extra: pip install 'tapeout[explore]'")  # fmt: skip
    try:
        data = _read_store(path)
    except ImportError as exc:
        return Section(key="pareto", title=TITLE, missing=f"exploration is not in this installation ({exc})")
    ran = path.is_file() and path.suffix in (".yaml", ".yml")
    return front_section(
        data, f"tapeout explore {path} --json" if ran else f"tapeout explore show {path} --json"
    )


def front_section(data: dict[str, Any], src: str) -> Section:
    """`explore show --json` output drawn: every feasible design and the front, on the first two
    objectives (or metrics)."""
    designs, front = data["designs"], data.get("front") or []
    objectives = list((data.get("objectives") or {}).items())
    metrics = [m for m, _ in objectives] or sorted({k for d in designs for k in (d.get("metrics") or {})})
    if len(metrics) < 2 or not designs:
        return Section(
            key="pareto", title=TITLE, missing=f"{src}: fewer than two metrics or no designs to draw"
        )
    mx, my = metrics[:2]

    def series(name: str, rows: list[dict[str, Any]]) -> Series:
        pts = [
            (r["metrics"].get(mx), r["metrics"].get(my), json.dumps(r.get("knobs", {})))
            for r in rows[:MAX_POINTS]
        ]
        pts = [p for p in pts if _num(p[0]) and _num(p[1])]
        return Series(name=name, x=tuple(p[0] for p in pts), y=tuple(p[1] for p in pts),
                      sources=tuple(src for _ in pts), notes=tuple(p[2] for p in pts))  # fmt: skip

    feasible = [d for d in designs if d.get("feasible")]
    chart = Chart(title=f"Designs on {mx} and {my}", kind="scatter", x_title=mx, y_title=my,
                  series=(series("feasible designs", feasible), series("Pareto front", front)),
                  reading=f"{len(front)} of {len(feasible)} feasible designs ({len(designs)} evaluated) are on the "
                  "front: none of the others is better on both objectives.")  # fmt: skip
    rows = tuple(
        (json.dumps(r.get("knobs", {})), *(r["metrics"].get(m) for m in metrics[:4])) for r in front[:200]
    )
    table = Table(
        title="The front", columns=("knobs", *metrics[:4]), rows=rows, sources=tuple(src for _ in rows)
    )
    return Section(key="pareto", title=TITLE, charts=(chart,), tables=(table,))


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
