"""A `Chart` as a plotly figure (plain JSON: data and layout), drawn in the page by plotly.js.

Every label that came from a user or a file is HTML-escaped here: plotly draws its labels as a
small subset of HTML, and an escaped `<` comes out as the character, never as markup. Each
point's hover shows its value, what it is and the source of its numbers.
"""

from __future__ import annotations

import html
import math
from typing import Any

from tapeout.study.result import Cell, Chart, Series

PALETTE = ("#1f5f99", "#d08a00", "#3a8f5c", "#b8473d", "#6b5ba8", "#4b8fb0", "#8c6d3f", "#c0607f", "#5d6b78")
HOVER = "%{customdata[2]}: %{y:,.4~g}<br>%{customdata[1]}<br><i>source: %{customdata[0]}</i><extra>%{customdata[3]}</extra>"


def _e(value: Cell) -> str:
    return html.escape(str(value), quote=False)


def _num(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _x(v: Cell) -> Cell:
    return _e(v) if isinstance(v, str) else v


def _trace(s: Series, i: int, kind: str) -> dict[str, Any]:
    notes = s.notes or tuple("" for _ in s.x)
    custom = [
        [_e(src), _e(note), _e(x), _e(s.name)] for src, note, x in zip(s.sources, notes, s.x, strict=True)
    ]
    colour = PALETTE[i % len(PALETTE)]
    t: dict[str, Any] = {"name": _e(s.name), "x": [_x(v) for v in s.x], "y": [_num(v) for v in s.y],
                         "customdata": custom, "hovertemplate": HOVER}  # fmt: skip
    if kind in ("bar", "stack"):
        t.update(type="bar", marker={"color": colour})
        if s.error_low:
            t["error_y"] = {"type": "data", "symmetric": False, "array": list(s.error_high),
                            "arrayminus": list(s.error_low), "color": "#333"}  # fmt: skip
    else:
        mode = "lines+markers" if kind == "line" and s.mode == "markers" else s.mode
        t.update(
            type="scatter", mode=mode, marker={"color": colour, "size": 7}, line={"color": colour, "width": 2}
        )
    return t


def figure(c: Chart) -> dict[str, Any]:
    """The plotly figure of a chart."""
    shapes, notes = [], []
    for lim in c.limits:
        ref = {"xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": lim.value, "y1": lim.value} if lim.axis == "y" \
            else {"yref": "paper", "y0": 0, "y1": 1, "xref": "x", "x0": lim.value, "x1": lim.value}  # fmt: skip
        shapes.append({"type": "line", **ref, "line": {"color": "#b8473d", "width": 1.5, "dash": "dash"}})
        where = {"xref": "paper", "x": 1, "yref": "y", "y": lim.value, "xanchor": "right", "yanchor": "bottom"} \
            if lim.axis == "y" else {"yref": "paper", "y": 1, "xref": "x", "x": lim.value, "yanchor": "top"}  # fmt: skip
        notes.append(
            {**where, "text": _e(lim.label), "showarrow": False, "font": {"size": 11, "color": "#b8473d"}}
        )
    layout: dict[str, Any] = {
        "title": {"text": _e(c.title), "font": {"size": 15}, "x": 0, "xanchor": "left"},
        "xaxis": {"title": {"text": _e(c.x_title)}, "type": "log" if c.log_x else "-", "automargin": True},
        "yaxis": {"title": {"text": _e(c.y_title)}, "type": "log" if c.log_y else "-", "automargin": True,
                  "rangemode": "tozero" if not c.log_y else "normal"},
        "barmode": "stack" if c.kind == "stack" else "group",
        "margin": {"l": 60, "r": 20, "t": 48, "b": 60}, "legend": {"orientation": "h", "y": -0.22},
        "font": {"family": "-apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif", "size": 12},
        "plot_bgcolor": "#fff", "paper_bgcolor": "#fff", "hoverlabel": {"align": "left"},
        "shapes": shapes, "annotations": notes,
    }  # fmt: skip
    return {"data": [_trace(s, i, c.kind) for i, s in enumerate(c.series)], "layout": layout}
