"""The report in a real browser: Debian's chromium, headless, driven by selenium. The flagship page
loads with no console error and fetches nothing, every chart draws, the hostile page shows the
name as text and runs none of it; screenshots are written under pytest's tmp path."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tapeout.report import render_study, write_page
from test_study import HOSTILE, flagship, hostile_result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason=f"Debian's chromium and its driver are not installed here ({INSTALL})",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # the dev extra has it
        raise AssertionError(f"the browser tests need selenium: pip install -e '.[dev]' ({exc})") from exc
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ):
        options.add_argument(arg)
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: Any, path: Path) -> list[dict[str, Any]]:
    """Load a page from disk, wait until its charts have drawn; the console's messages."""
    driver.get_log("browser")  # drop what an earlier page left
    driver.get(path.resolve().as_uri())
    want = driver.execute_script("return document.querySelectorAll('.chart').length")
    for _ in range(100):
        drawn = driver.execute_script("return document.querySelectorAll('.chart .main-svg').length")
        if drawn and driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.1)
    assert want > 0
    return list(driver.get_log("browser"))


@pytest.mark.slow
def test_flagship_page_loads_and_every_chart_draws(browser, tmp_path):
    result = flagship()
    page = tmp_path / "study.html"
    write_page(page, render_study(result))
    logs = _open(browser, page)
    assert [m for m in logs if m["level"] in ("SEVERE", "WARNING")] == []
    charts = sum(len(s.charts) for s in result.sections)
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.chart')).map(function (c) {"
        "  var marks = c.querySelectorAll('.main-svg path, .main-svg rect, canvas').length;"
        "  var box = c.getBoundingClientRect(); return [marks, box.width, box.height]; })"
    )
    assert len(sizes) == charts
    assert all(marks > 0 and w > 100 and h > 100 for marks, w, h in sizes), sizes
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    shot = tmp_path / "study.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_hostile_name_shows_as_text_and_runs_nothing(browser, tmp_path):
    page = tmp_path / "hostile.html"
    write_page(page, render_study(hostile_result()))
    logs = _open(browser, page)
    assert [m for m in logs if m["level"] == "SEVERE"] == []
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelector('h1').textContent") == HOSTILE
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    drawn = browser.execute_script(
        "return Array.from(document.querySelectorAll('.gtitle, .xtick text, .xtitle'))"
        ".map(function (t) { return t.textContent; })"
    )
    assert drawn.count(HOSTILE) == 3  # title, category and axis: plotly draws the escaped text as characters
    shot = tmp_path / "hostile.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1_000
