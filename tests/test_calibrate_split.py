"""`tapeout calibrate --split-date`: figures fitted on the earlier cases, judged on the later ones."""

import datetime
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tapeout.calibrate_split import parse_month, split, split_cases
from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.perf.calibration import CALIBRATION_FILE, table, use
from tapeout.validate import PUBLIC_CASES, load_cases, predict

runner = CliRunner()
MONTH = "2024-09"
# Public op cases with the dates this file gives them (None: undated). The CUDA bf16 figure has
# two earlier cases and one later; the fp8 figure has only a later one; attention two earlier
# and one later; STREAM and the NCCL ring are undated, as in the public file.
DATES = {
    "op-mamf-bf16-a100sxm": "2024-01",
    "op-mamf-bf16-h100sxm": "2024-02",
    "op-mamf-bf16-b200": "2025-04",
    "op-mamf-fp8-h100sxm": "2024-09",
    "op-fa2-fwdbwd-h100-noncausal-d128-s2048": "2023-07",
    "op-fa2-fwdbwd-h100-noncausal-d128-s16384": "2023-07",
    "op-fa2-fwdbwd-h100-causal-d128-s16384": "2025-01",
    "op-stream-a100-80": None,
    "op-stream-a100-40": None,
    "comm-allreduce-h200x8-ring-16g": None,
}
EARLIER = {"op-mamf-bf16-a100sxm", "op-mamf-bf16-h100sxm"} | {
    i for i in DATES if i.startswith("op-fa2") and "noncausal" in i
}
LATER = {"op-mamf-bf16-b200", "op-mamf-fp8-h100sxm", "op-fa2-fwdbwd-h100-causal-d128-s16384"}
UNDATED = {"op-stream-a100-80", "op-stream-a100-40", "comm-allreduce-h200x8-ring-16g"}


@pytest.fixture(scope="module", autouse=True)
def shipped():
    """The shipped figures in force, whatever TAPEOUT_CALIBRATION says."""
    use(CALIBRATION_FILE)
    try:
        yield
    finally:
        use(None)


def _cases(tmp_path: Path, scales: dict[str, float] | None = None, dates: dict | None = None) -> Path:
    """The cases of `DATES` (or `dates`) from the public file, re-dated, some values scaled."""
    data = yaml.safe_load(PUBLIC_CASES.read_text(encoding="utf-8"))
    by_id = {c["id"]: c for c in data["cases"]}
    cases = []
    for case_id, date in (dates or DATES).items():
        case = {k: v for k, v in by_id[case_id].items() if k != "software"}
        case["value"] *= (scales or {}).get(case_id, 1.0)
        if date is not None:
            case["software"] = {"name": "test", "date": date}
        cases.append(case)
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"schema": data["schema"], "cases": cases}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, shipped):
    """The split of the cases as `DATES` gives them."""
    return split(_cases(tmp_path_factory.mktemp("base")), MONTH)


def _fitted(result: dict) -> dict[tuple[str, str], float | None]:
    return {(f["figure"], f["stack"]): f["fitted"] for f in result["figures"]}


def test_each_case_is_on_its_side_of_the_month(tmp_path, base):
    earlier, later, undated = split_cases(load_cases(_cases(tmp_path)), MONTH)
    assert {c.id for c in earlier} == EARLIER
    assert {c.id for c in later} == LATER  # the month itself is later: strictly earlier is fitted
    assert {c.id for c in undated} == UNDATED

    result = base
    assert result["counts"] == {
        "cases": 10, "undated": 3, "earlier": 4, "fitted_on": 7, "later": 3, "evaluated": 3,
        "not_evaluated": {},
    }  # fmt: skip
    assert {c["id"] for c in result["cases"]} == LATER
    rows = {(f["figure"], f["stack"]): f["n"] for f in result["figures"]}
    assert rows[("matmul_16bit", "cuda")] == 2  # the A100 and H100 cases, not the later B200
    assert rows[("attention", "cuda")] == 2
    assert rows[("memory", "cuda")] == 2  # undated cases are fitted on


def test_a_later_case_s_value_changes_no_fitted_figure(tmp_path, base):
    moved = split(_cases(tmp_path, {i: 0.5 for i in LATER}), MONTH)
    assert _fitted(moved) == _fitted(base)
    for before, after in zip(base["cases"], moved["cases"], strict=True):
        # The same prediction against half the measured value: (1 + e') = 2 (1 + e).
        assert 1 + after["error_split"] == pytest.approx(2 * (1 + before["error_split"]))
    # Not vacuous: an earlier case's value does move its figure.
    earlier_moved = split(_cases(tmp_path, {"op-mamf-bf16-a100sxm": 0.8}), MONTH)
    assert _fitted(earlier_moved)[("matmul_16bit", "cuda")] < _fitted(base)[("matmul_16bit", "cuda")] - 0.01


def test_the_later_error_is_that_of_the_split_figures(tmp_path, base):
    path, result = _cases(tmp_path), base
    fitted = _fitted(result)
    b200 = next(c for c in load_cases(path) if c.id == "op-mamf-bf16-b200")
    alone = table().for_family(b200.chip.family).with_values(matmul_16bit=fitted[("matmul_16bit", "cuda")])
    row = next(r for r in result["cases"] if r["id"] == b200.id)
    assert row["error_split"] == pytest.approx(predict(b200, alone).error)
    assert row["error_current"] == pytest.approx(predict(b200, table().for_family(b200.chip.family)).error)
    assert row["error_split"] != pytest.approx(row["error_current"], abs=1e-4)
    assert row["kept"] is False


def test_a_figure_with_too_few_earlier_cases_keeps_its_value_in_force(base):
    result = base
    assert _fitted(result)[("matmul_8bit", "cuda")] is None
    fp8 = next(r for r in result["cases"] if r["id"] == "op-mamf-fp8-h100sxm")
    assert fp8["kept"] is True
    assert fp8["error_split"] == pytest.approx(fp8["error_current"])
    assert result["by_kind"]["gemm"]["kept"] == 1
    assert result["carried_over"]["n"] == 2  # the B200 and the causal attention case
    assert {k: v["n"] for k, v in result["by_confidence"].items()} == {"confirmed": 2, "unconfirmed": 1}
    mape = (abs(fp8["error_split"]) + sum(abs(r["error_split"]) for r in result["cases"] if r is not fp8)) / 3
    assert result["all"]["mape_split"] == pytest.approx(mape)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-13", "not a month in the form YYYY-MM"),
        ("2024-00", "not a month in the form YYYY-MM"),
        ("2024-9", "not a month in the form YYYY-MM"),
        ("24-09", "not a month in the form YYYY-MM"),
        ("2024/09", "not a month in the form YYYY-MM"),
        ("", "not a month in the form YYYY-MM"),
        ("2027-01", "is in the future"),
        ("2014-12", "is before 2015-01"),
    ],
)
def test_a_bad_month_is_refused_naming_the_flag_and_the_format(value, message):
    with pytest.raises(TapeoutError, match=message) as err:
        parse_month(value, today=datetime.date(2026, 12, 5))
    text = str(err.value)
    assert text.startswith("--split-date: ") and value in text and "YYYY-MM from 2015-01 to 2026-12" in text


def test_the_first_and_the_current_month_are_accepted():
    assert parse_month("2015-01") == "2015-01"
    assert parse_month("2026-12", today=datetime.date(2026, 12, 31)) == "2026-12"


@pytest.mark.parametrize(
    ("month", "dates", "message"),
    [
        ("2015-01", None, r"no case is dated before it \(its cases are dated 2023-07 to 2025-04\)"),
        ("2026-01", None, "no case is dated 2026-01 or later"),
        ("2024-09", {i: None for i in UNDATED}, "no case has a software date"),
    ],
)
def test_a_split_with_an_empty_side_is_refused(tmp_path, month, dates, message):
    with pytest.raises(TapeoutError, match=message) as err:
        split(_cases(tmp_path, dates=dates), month)
    assert str(err.value).startswith(f"--split-date {month}: ")


def test_the_command_prints_the_split_and_refuses_to_write_it(tmp_path):
    path = _cases(tmp_path)
    got = runner.invoke(app, ["calibrate", "--cases", str(path), "--split-date", MONTH, "--json"])
    assert got.exit_code == 0, got.output
    report = json.loads(got.stdout)
    assert report["split_date"] == MONTH
    assert {c["id"] for c in report["cases"]} == LATER

    got = runner.invoke(app, ["calibrate", "--cases", str(path), "--split-date", MONTH])
    assert got.exit_code == 0, got.output
    text = " ".join(got.stdout.split())
    assert "10 cases: 3 undated (fitted on, never evaluated), 4 dated before 2024-09; fitted on 7" in text
    assert "kept (in force)" in text

    out = tmp_path / "split.yaml"
    got = runner.invoke(app, ["calibrate", "--cases", str(path), "--split-date", MONTH, "--write", str(out)])
    assert isinstance(got.exception, TapeoutError)
    assert "--write cannot be used with --split-date 2024-09" in str(got.exception)
    assert "evaluation" in str(got.exception)
    assert not out.exists()

    got = runner.invoke(app, ["calibrate", "--cases", str(path), "--split-date", "2024-9"])
    assert isinstance(got.exception, TapeoutError)
    assert "--split-date: '2024-9' is not a month in the form YYYY-MM" in str(got.exception)


def test_an_entry_without_earlier_cases_falls_through_its_hierarchy():
    """A profile's version fitted only on later cases is left out of a split: its cases take the
    profile's figure, not the value fitted on themselves."""
    from tapeout.calibrate import FitSpec
    from tapeout.calibrate_split import _without
    from tapeout.perf.calibration import SoftwareRef, table

    tbl = table()
    version = SoftwareRef("trt-llm", "0.17")
    assert (
        tbl.resolve("ampere", version, "serving")[0].serving_efficiency
        == tbl.entries["serving_efficiency"]["trt-llm@0.17"]
    )
    thinned = _without(tbl, [FitSpec(("serving_efficiency",), "llm_inference", "trt-llm@0.17")])
    after = thinned.resolve("ampere", version, "serving")[0].serving_efficiency
    assert after == tbl.entries["serving_efficiency"]["trt-llm"]
