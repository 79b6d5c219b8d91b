"""The study (`tapeout-study/1`) and its HTML report: schema errors named, hostile names escaped,
nothing fetched from the network, size, every number traceable, no report overwritten."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tapeout.errors import TapeoutError
from tapeout.report import render_result, render_study, write_page
from tapeout.report.page import fmt, script_json
from tapeout.study import load_study, parse_study, run_study
from tapeout.study.result import Chart, Headline, Section, Series, StudyResult, Table

HOSTILE = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">&amp;'
MAX_BYTES = 8_000_000


def study_data(**extra: Any) -> dict[str, Any]:
    return {
        "schema": "tapeout-study/1", "name": "t",
        "candidates": [{"hardware": "h100-sxm"}, {"hardware": "tapeout-i1"}],
        "demands": [{"kind": "recsys", "name": "rank", "model": "dlrm-v2", "qps": 1e5, "latency_limit_s": 0.01}],
        **extra,
    }  # fmt: skip


@functools.cache
def flagship() -> StudyResult:
    """The bundled study, run once per test session (about 20 s here)."""
    return run_study(load_study())


def hostile_result() -> StudyResult:
    """A small result whose every user string is hostile markup."""
    series = Series(name=HOSTILE, x=(HOSTILE, "b"), y=(1.0, 2.0), sources=(HOSTILE, "tapeout cost x"),
                    notes=(HOSTILE, ""))  # fmt: skip
    chart = Chart(title=HOSTILE, kind="bar", x_title=HOSTILE, y_title="y", series=(series,), reading=HOSTILE)
    table = Table(title=HOSTILE, columns=("name", "value"), rows=((HOSTILE, 1.5),), sources=(HOSTILE,))
    section = Section(key="answer", title=HOSTILE, intro=HOSTILE, charts=(chart,), tables=(table,))
    return StudyResult(name=HOSTILE, notes=HOSTILE, origin=HOSTILE, version="0", seconds=1.0,
                       headline=Headline(text=HOSTILE, source=HOSTILE), sections=(section,))  # fmt: skip


# ---- the study file ----------------------------------------------------------------------------
def test_flagship_file_parses_and_names_its_parts():
    s = load_study()
    assert s.baseline == "h20" and s.ours == ("tapeout-i1", "tapeout-t1")
    assert {d.kind for d in s.demand.demands} == {"serving", "recsys", "training"}
    assert Path("examples/study.yaml").resolve() == Path(s.origin).resolve()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"colour": 1}, ["unknown field 'colour'", "known: baseline"]),
        ({"schema": "tapeout-study/2"}, ["field 'schema'", "tapeout-study/1"]),
        ({"error_quantile": 1.5}, ["error_quantile", "1.5", "unit: fraction"]),
        ({"baseline": "tapeout-i1"}, ["field 'baseline'", "not a bought candidate", "h100-sxm"]),
        ({"candidates": [{"hardware": "h100-sxm"}, {"hardware": "tapeout-j9"}]},
         ["candidates.1.hardware", "unknown hardware id 'tapeout-j9'", "known:", "tapeout-i1"]),
        ({"candidates": [{"hardware": "h100-sxm", "levy": -1}, {"hardware": "tapeout-i1"}]},
         ["candidates.0.levy", "(got -1)", "unit: fraction of the price"]),
        ({"candidates": [{"hardware": "h100-sxm"}]}, ["our own designs", "ours: none"]),
        ({"demands": [{"kind": "mining", "name": "x", "model": "dlrm-v2"}]}, ["'serving'", "'recsys'", "'training'"]),
        ({"demands": [{"kind": "recsys", "name": "r", "model": "dlrm-v9", "qps": 1, "latency_limit_s": 1}]},
         ["demands.0.model", "unknown model id 'dlrm-v9'", "known:", "dlrm-v2"]),
        ({"demands": [{"kind": "recsys", "name": "r", "model": "llama-3.1-8b", "qps": 1, "latency_limit_s": 1}]},
         ["demands.0.model", "needs a recommendation model"]),
    ],
)  # fmt: skip
def test_bad_study_is_named(change, words):
    with pytest.raises(TapeoutError) as err:
        parse_study(study_data(**change))
    for w in words:
        assert w in str(err.value)


def test_a_demand_no_candidate_meets_says_which_limit_and_by_how_much():
    s = parse_study(study_data(demands=[
        {"kind": "serving", "name": "chat", "model": "llama-3.1-8b", "input_len": 1000, "output_len": 100,
         "ttft_limit_s": 2, "tpot_limit_s": 0.001, "tokens_per_s": 1e5}]))  # fmt: skip
    with pytest.raises(TapeoutError) as err:
        run_study(s, workers=1)
    text = str(err.value)
    assert "no candidate can meet it" in text and "TPOT limit 0.001 s" in text
    step = re.search(r"one decode step ([0-9.]+) s", text)
    assert step is not None and float(step.group(1)) > 0.001  # the step it takes, against the limit


# ---- the page ----------------------------------------------------------------------------------
def test_hostile_names_are_escaped_everywhere():
    page = render_study(hostile_result())
    assert "window.__pwned=1</script>" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;&amp;amp;" in page  # the HTML text
    blocks = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    assert blocks and all("<" not in b and ">" not in b for b in blocks)
    figure = json.loads(blocks[0])
    assert figure["data"][0]["name"] == "&lt;/script&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x " \
        "onerror=\"window.__pwned=2\"&gt;&amp;amp;"  # fmt: skip


def test_script_json_cannot_close_its_block():
    text = script_json({"a": "</script><!-- \u2028 &"})
    assert "</" not in text and "<!--" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- \u2028 &"}


class _Fetches(HTMLParser):
    """Anything in a page that makes a browser fetch: a src or href that is not an anchor on the
    page, a stylesheet link, an import or url() in a style."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._style = tag == "style"
        if tag == "link":
            self.found.append("<link>")
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster") and not (value or "").startswith("#"):
                self.found.append(f"{tag} {name}={value}")

    def handle_data(self, data: str) -> None:
        if self._style and re.search(r"@import|url\(", data):
            self.found.append("style fetch")


def _external(page: str) -> list[str]:
    parser = _Fetches()
    parser.feed(page)
    return parser.found


def test_page_is_self_contained_and_small():
    page = render_study(hostile_result())
    assert _external(page) == []
    assert page.count("<script") == page.count("</script>")
    assert all("src=" not in tag for tag in re.findall(r"<script[^>]*>", page))
    assert len(page.encode()) < MAX_BYTES


def test_numbers_format_for_people():
    assert [fmt(x) for x in (1234567.8, 0.5, 0.012345, 12.3456, None, 3)] == [
        "1,234,568", "0.5000", "0.01235", "12.35", "–", "3"
    ]  # fmt: skip


def test_write_page_refuses_to_overwrite(tmp_path):
    out = tmp_path / "r.html"
    write_page(out, "one")
    with pytest.raises(TapeoutError, match="exists; give --force"):
        write_page(out, "two")
    assert out.read_text() == "one"
    write_page(out, "two", force=True)
    assert out.read_text() == "two"


def test_report_refuses_unknown_json_by_name():
    with pytest.raises(TapeoutError) as err:
        render_result({"colour": "blue"}, "thing.json")
    assert "thing.json: not a result tapeout report knows" in str(err.value) and "serve" in str(err.value)


def test_report_renders_a_cost_result():
    from tapeout.cost.api import cost

    page = render_result(cost("tapeout-i1"), "cost.json")
    assert "Die area by block" in page and "cost.json: area_mm2.sram" in page
    assert _external(page) == []


# ---- the flagship study, run once --------------------------------------------------------------
@pytest.mark.slow
def test_flagship_every_number_is_traceable():
    r = flagship()
    assert r.headline.source and "Against buying h20" in r.headline.text
    assert [s.key for s in r.sections] == ["answer", "workloads", "roofline", "die", "pareto", "software",
                                           "confidence"]  # fmt: skip
    pareto = r.section("pareto")  # the flagship sweeps its space file around tapeout-i1 as it runs
    assert pareto.missing is None and pareto.charts and pareto.tables
    assert all("tapeout explore" in src for src in pareto.tables[0].sources)
    charts = [c for s in r.sections for c in s.charts]
    assert len(charts) >= 20 and all(c.reading for c in charts)
    for c in charts:
        for s in c.series:
            assert len(s.sources) == len(s.x) and all(src.strip() for src in s.sources), (c.title, s.name)
    for t in (t for s in r.sections for t in s.tables):
        assert all(src.strip() for src in t.sources), t.title


@pytest.mark.slow
def test_flagship_savings_add_up_from_the_plan():
    r = flagship()
    f = r.headline.figures
    assert f["savings_usd"] == pytest.approx(f["baseline_tco_usd"] - f["ours_tco_usd"])
    assert f["savings_low_usd"] <= f["savings_usd"] <= f["savings_high_usd"]
    plan = r.data["plan"]
    h20 = [next(a for a in d["alternatives"] if a["candidate"] == "h20") for d in plan["demands"]]
    served = sum(a["tco_usd"] for a in h20 if "tco_usd" in a)
    assert f["baseline_tco_usd"] >= served  # h20 where it can, a bought chip where it cannot


@pytest.mark.slow
def test_flagship_page_round_trips_and_stays_small(tmp_path):
    r = flagship()
    page = render_study(r)
    assert len(page.encode()) < MAX_BYTES and _external(page) == []
    assert page.count('class="tapeout-figure"') == sum(len(s.charts) for s in r.sections)
    saved = tmp_path / "study.json"
    saved.write_text(json.dumps(r.as_dict()))
    again = render_result(json.loads(saved.read_text()), str(saved))
    assert again.count('class="tapeout-figure"') == page.count('class="tapeout-figure"')


# ---- the commands and the optional extras ------------------------------------------------------
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from tapeout.cli import main; main()", *args],
                          capture_output=True, text=True, check=False, cwd=cwd)  # fmt: skip


def test_study_refuses_to_overwrite_before_it_runs(tmp_path):
    out = tmp_path / "study.html"
    out.write_text("mine")
    proc = _cli("study", "--out", str(out))
    assert proc.returncode == 2 and "exists; give --force" in proc.stderr
    assert out.read_text() == "mine"


def test_report_command_writes_refuses_and_forces(tmp_path):
    from tapeout.cost.api import cost

    saved = tmp_path / "cost.json"
    saved.write_text(json.dumps(cost("tapeout-t1")))
    proc = _cli("report", str(saved))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {tmp_path / 'cost.html'}" in proc.stdout
    again = _cli("report", str(saved), "--out", str(tmp_path / "cost.html"))
    assert again.returncode == 2 and "exists; give --force" in again.stderr
    assert _cli("report", str(saved), "--out", str(tmp_path / "cost.html"), "--force").returncode == 0
    odd = tmp_path / "odd.json"
    odd.write_text('{"colour": "blue"}')
    bad = _cli("report", str(odd))
    assert bad.returncode == 2 and "not a result tapeout report knows" in bad.stderr


def test_missing_plotly_says_how_to_install(monkeypatch):
    from tapeout.report.page import plotly_js

    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    with pytest.raises(TapeoutError, match=r"pip install 'tapeout\[report\]'"):
        plotly_js()


def test_missing_torch_says_how_to_install(monkeypatch):
    from tapeout.study.software import compile_table

    for name in ("torch", "tapeout.compiler", "tapeout.compiler.hf"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(TapeoutError, match=r"pip install 'tapeout\[torch\]'"):
        compile_table(load_study().demand.demands, {"tapeout-i1": "tapeout-i1"})


def test_report_draws_an_exploration_and_its_front():
    designs = [{"knobs": {"cores": c}, "metrics": {"tokens_per_s": 10.0 * c, "usd": 100.0 + c * c},
                "feasible": c != 3, "reason": None} for c in range(1, 6)]  # fmt: skip
    data = {"store": "runs/x", "objectives": {"tokens_per_s": "max", "usd": "min"}, "designs": designs,
            "front": designs[:2]}  # fmt: skip
    page = render_result(data, "explore.json")
    figure = json.loads(re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)[0])
    assert [len(t["x"]) for t in figure["data"]] == [4, 2]  # the feasible designs, then the front
    assert "Designs on tokens_per_s and usd" in page


def test_the_sweep_without_the_explore_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    from tapeout.study import silicon

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    section = silicon.pareto(Path(silicon.__file__).parents[1] / "data" / "i1-space.yaml")
    assert section.missing is not None and "pip install 'tapeout[explore]'" in section.missing
