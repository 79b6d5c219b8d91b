"""One self-contained HTML page: inline styles, plotly.js inlined, every user string escaped, every
number's source a footnote (and a hover title on its row).

Nothing here loads from the network: no remote script, font, style or image. Figures travel as
JSON in `<script type="application/json">` blocks with `<`, `>` and `&` escaped, so no string in
them can end the block; labels are HTML-escaped before they reach plotly, which draws the
entities back as text.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from typing import Any

from tapeout.errors import TapeoutError
from tapeout.report.charts import figure
from tapeout.study.result import Cell, Chart, Section, Table

INSTALL_PLOTLY = "the HTML report needs plotly: pip install 'tapeout[report]'"

STYLE = """
:root { --ink: #1d232b; --muted: #5b6470; --rule: #d9dee4; --accent: #1f5f99; --soft: #f4f6f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 32px 28px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 21px; margin: 48px 0 8px; padding-top: 12px; border-top: 1px solid var(--rule); }
h3 { font-size: 16px; margin: 28px 0 6px; }
p { margin: 6px 0 10px; max-width: 80ch; }
.meta, .note, .reading, .sources { color: var(--muted); font-size: 13px; }
.headline { background: var(--soft); border-left: 4px solid var(--accent); padding: 14px 18px;
  font-size: 17px; margin: 18px 0 8px; max-width: none; }
.notes { white-space: pre-wrap; }
nav ol { columns: 2; font-size: 14px; padding-left: 20px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.missing { background: #fff7e6; border-left: 4px solid #d08a00; padding: 8px 14px; }
.chart { width: 100%; height: 420px; }
figure { margin: 18px 0 26px; }
figcaption { margin-top: 2px; }
.reading { color: var(--ink); font-size: 14px; font-style: italic; }
.scroll { overflow-x: auto; max-height: 560px; overflow-y: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { position: sticky; top: 0; background: #fff; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
sup a { font-size: 11px; }
ol.sources li { margin: 2px 0; word-break: break-word; }
"""

BOOT = """
(function () {
  var blocks = document.querySelectorAll('script.tapeout-figure');
  for (var i = 0; i < blocks.length; i++) {
    var fig = JSON.parse(blocks[i].textContent);
    Plotly.newPlot(blocks[i].getAttribute('data-target'), fig.data, fig.layout,
                   {displaylogo: false, responsive: true});
  }
})();
"""


def esc(value: object) -> str:
    """Any value as HTML text: markup characters and quotes escaped."""
    return html.escape(str(value), quote=True)


def script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: no `</script>`, comment or entity can form in it."""
    text = json.dumps(obj, allow_nan=False)
    for ch, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, code)
    return text


def fmt(x: Cell) -> str:
    """A number for people: separators from 1,000, three or four significant digits below, never
    scientific notation; '–' for none."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if not math.isfinite(x):
        return "–"
    if x == 0 or abs(x) >= 1000 or (isinstance(x, int)):
        return f"{x:,.0f}"
    digits = max(0, 3 - math.floor(math.log10(abs(x))))
    return f"{x:,.{min(digits, 12)}f}"


class Sources:
    """The page's footnotes: each distinct source once, numbered in order of first use."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, source: str) -> int:
        if source not in self.items:
            self.items.append(source)
        return self.items.index(source) + 1

    def mark(self, source: str) -> str:
        n = self.ref(source)
        return f'<sup><a href="#src-{n}" title="{esc(source)}">[{n}]</a></sup>'

    def html(self) -> str:
        rows = "".join(f'<li id="src-{i}">{esc(s)}</li>' for i, s in enumerate(self.items, 1))
        return f'<h2 id="sources">Where every number comes from</h2><ol class="sources">{rows}</ol>'


def table_html(t: Table, sources: Sources) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.columns) + "<th>source</th>"
    body = []
    for row, src in zip(t.rows, t.sources, strict=True):
        cells = "".join(
            f'<td class="num" title="{esc(src)}">{esc(fmt(v))}</td>' if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{esc(fmt(v))}</td>"
            for v in row
        )  # fmt: skip
        body.append(f"<tr>{cells}<td>{sources.mark(src)}</td></tr>")
    note = f'<p class="note">{esc(t.note)}</p>' if t.note else ""
    return (f"<h3>{esc(t.title)}</h3><div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{note}")  # fmt: skip


def chart_html(c: Chart, n: int, sources: Sources) -> str:
    used = dict.fromkeys(s for series in c.series for s in series.sources)
    marks = " ".join(sources.mark(s) for s in used)
    return (
        f'<figure><div class="chart" id="chart-{n}" role="img" aria-label="{esc(c.title)}"></div>'
        f'<script type="application/json" class="tapeout-figure" data-target="chart-{n}">{script_json(figure(c))}</script>'
        f'<figcaption><p class="reading">{esc(c.reading)}</p><p class="sources">sources: {marks}</p></figcaption></figure>'
    )


def section_html(s: Section, first_chart: int, sources: Sources) -> tuple[str, int]:
    """A section, and the number of the next chart."""
    parts = [f'<h2 id="{esc(s.key)}">{esc(s.title)}</h2>']
    if s.intro:
        parts.append(f"<p>{esc(s.intro)}</p>")
    if s.missing is not None:
        parts.append(f'<p class="missing">{esc(s.missing)}</p>')
    parts += [f'<p class="missing">{esc(n)}</p>' for n in s.notes]
    n = first_chart
    for c in s.charts:
        parts.append(chart_html(c, n, sources))
        n += 1
    parts += [table_html(t, sources) for t in s.tables]
    return "".join(parts), n


def plotly_js() -> str:
    """plotly.js, to inline; the `report` extra."""
    try:
        from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]  # noqa: TID251  (the report: plotly's one place)
    except ImportError as exc:
        raise TapeoutError(f"{INSTALL_PLOTLY} ({exc})") from None
    return str(get_plotlyjs())


def page(title: str, header: Callable[[Sources], str], sections: tuple[Section, ...]) -> str:
    """The whole page: the header (`header` draws it, marking its sources), a contents list, the
    sections and the footnotes."""
    sources = Sources()
    header_html = header(sources)
    body, n = [], 1
    for s in sections:
        text, n = section_html(s, n, sources)
        body.append(text)
    contents = "".join(f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a></li>' for s in sections)
    js = plotly_js()
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
        f'{header_html}<nav><ol>{contents}<li><a href="#sources">Where every number comes from</a></li></ol></nav>'
        f"{''.join(body)}{sources.html()}</main>"
        f"<script>{js}</script><script>{BOOT}</script></body></html>\n"
    )
