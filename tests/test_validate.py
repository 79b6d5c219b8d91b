import json
from pathlib import Path

import pytest
import yaml

from tapeout.errors import TapeoutError
from tapeout.validate import PUBLIC_CASES, load_cases, predict, run

OP_KINDS = ("gemm", "attention", "memory", "collective")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "validation" / "public_cases.yaml"


@pytest.fixture
def report(public_report):
    return public_report


def test_bundled_cases_are_the_public_set():
    if SHARED.exists():
        assert PUBLIC_CASES.read_text() == SHARED.read_text()


@pytest.mark.validation
def test_op_kinds_meet_their_targets(report):
    """MAPE <= 10 % over the op cases, every one within 25 % (the foundation's target)."""
    ops = [c for c in report["cases"] if c["kind"] in OP_KINDS]
    assert len(ops) == 20
    errors = [abs(c["error"]) for c in ops]
    table = "\n".join(f"{c['id']}: {100 * c['error']:+.1f}%" for c in ops)
    assert sum(errors) / len(errors) <= 0.10, table
    assert max(errors) <= 0.25, table


@pytest.mark.validation
def test_llm_inference_cases_are_all_predicted(report):
    """The serving target is MAPE <= 15 % with 70 % of cases within 15 %; this holds the
    measured level (MAPE 14.1 %, 19 of 26 within 15 %) against regressions."""
    llm = [c for c in report["cases"] if c["kind"] == "llm_inference"]
    assert len(llm) == 26 and all(c["predicted"] is not None for c in llm)
    errors = [abs(c["error"]) for c in llm]
    table = "\n".join(f"{c['id']}: {100 * c['error']:+.1f}%" for c in llm)
    assert sum(errors) / len(errors) <= 0.15, table
    assert sum(e <= 0.15 for e in errors) >= 18, table


@pytest.mark.validation
def test_llm_training_cases_hold_their_level(report):
    """The training target is MAPE <= 10 % with 70 % within 10 %; this holds the measured level
    (MAPE 12.6 %, 23 of 35 within 10 %, every case predicted, with physical energy and the
    frameworks' efficiency figures) against regressions."""
    cases = [c for c in report["cases"] if c["kind"] == "llm_training"]
    assert len(cases) == 35
    assert all(c["predicted"] is not None for c in cases)
    errors = [abs(c["error"]) for c in cases]
    table = "\n".join(f"{c['id']}: {c['error']:+.3f}" for c in cases)
    assert sum(errors) / len(errors) <= 0.135, table
    assert sum(e <= 0.10 for e in errors) >= 23, table


@pytest.mark.validation
def test_recsys_cases_hold_their_level(report):
    """The recsys target is MAPE <= 20 %; this holds the measured level (9.8 % over 10 cases:
    inference 8.8 %, training 11.4 %) against regressions."""
    cases = [c for c in report["cases"] if c["kind"].startswith("recsys")]
    assert len(cases) == 10 and all(c["predicted"] is not None for c in cases)
    errors = [abs(c["error"]) for c in cases]
    assert sum(errors) / len(errors) <= 0.11, "\n".join(f"{c['id']}: {c['error']:+.3f}" for c in cases)


@pytest.mark.validation
def test_report_follows_the_schema(report):
    assert set(report) == {"cases", "summary"}
    for c in report["cases"]:
        assert {"id", "kind", "metric", "measured", "predicted", "error"} <= set(c)
    s = report["summary"]
    assert {"mape", "within_10pct", "within_25pct", "by_kind", "unsupported"} <= set(s)
    assert s["unsupported"] == sum(1 for c in report["cases"] if c["predicted"] is None)
    for c in report["cases"]:
        if c["predicted"] is None:
            assert c["error"] is None
            assert c["reason"]
    assert s["by_kind"]["gemm"]["n"] == 8
    json.dumps(report)


def _write_case(tmp_path, **changes):
    base = {
        "id": "t-gemm", "kind": "gemm", "hardware": "h100-sxm", "chips": 1, "precision": "bf16",
        "params": {"m": 4096, "n": 4096, "k": 4096}, "metric": "tflops", "value": 700.0,
        "source": "test", "confidence": "confirmed",
    }  # fmt: skip
    base.update(changes)
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"schema": "tapeout-validation/1", "cases": [base]}))
    return path


def test_a_good_case_file_runs(tmp_path):
    out = run(_write_case(tmp_path))
    assert out["cases"][0]["predicted"] > 0


def test_an_unknown_software_name_is_not_an_error(tmp_path):
    path = _write_case(tmp_path, software={"name": "some-new-engine", "version": "0.1", "date": "2025-06"})
    assert run(path)["cases"][0]["predicted"] > 0


@pytest.mark.validation
def test_summary_reports_by_confidence(report):
    by = report["summary"]["by_confidence"]
    assert sum(v["n"] for v in by.values()) == len(report["cases"])
    for confidence, entry in by.items():
        rows = [c for c in report["cases"] if c["id"] in _ids_of(confidence)]
        assert entry["mape"] == pytest.approx(sum(abs(c["error"]) for c in rows) / len(rows))


def _ids_of(confidence):
    return {c.id for c in load_cases(PUBLIC_CASES) if c.confidence == confidence}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"params": {"m": 4096, "n": 4096, "k": 4096, "z": 1}}, r"t-gemm: field 'params.z': unknown field"),
        ({"params": {"m": "big", "n": 4096, "k": 4096}}, r"t-gemm: field 'params.m'"),
        ({"params": {"m": 4096, "n": 4096}}, r"t-gemm: field 'params.k': missing"),
        ({"hardware": "h900"}, r"unknown hardware id 'h900'; did you mean gh200\? known: .*h100-sxm"),
        ({"metric": "tokens_per_s"}, r"t-gemm: field 'metric'.*known: tflops"),
        ({"value": -3}, r"t-gemm: field 'value'"),
        ({"precision": "fp64"}, r"t-gemm: field 'precision'"),
        ({"colour": "red"}, r"t-gemm: field 'colour': unknown field"),
        (
            {
                "kind": "llm_inference",
                "params": {"scenario": "offline", "input_len": 10},
                "metric": "tokens_per_s",
            },
            r"field 'model': kind llm_inference needs a model",
        ),
        (
            {"hardware": {"base": "h100-sxm", "memory": {"bandwidth_gb_s": -5}}},
            r"memory.bandwidth_gb_s.*unit: GB/s",
        ),
        ({"network": {"scale_out_gbit_s_per_chip": -1}}, r"network.scale_out_gbit_s_per_chip"),
        ({"software": {"name": "vllm", "date": "2099-01"}}, r"t-gemm: field 'software.date'.*in the future"),
        ({"software": {"name": "vllm", "date": "2012-03"}}, r"t-gemm: field 'software.date'.*before 2015"),
        ({"software": {"name": "vllm", "date": "2024-13"}}, r"t-gemm: field 'software.date'"),
        ({"software": {"name": "vLLM"}}, r"t-gemm: field 'software.name'"),
        ({"software": {"version": "1"}}, r"t-gemm: field 'software.name': missing"),
        ({"software": {"name": "vllm", "build": 3}}, r"t-gemm: field 'software.build': unknown field"),
    ],
)
def test_bad_cases_name_the_case_and_field(tmp_path, changes, message):
    with pytest.raises(TapeoutError, match=message):
        load_cases(_write_case(tmp_path, **changes))


def test_bad_files(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("schema: tapeout-validation/2\ncases: []\n")
    with pytest.raises(TapeoutError, match="schema"):
        load_cases(path)
    path.write_text("schema: tapeout-validation/1\ncases: [{id: a}]\nextra: 1\n")
    with pytest.raises(TapeoutError, match="unknown top-level fields: extra"):
        load_cases(path)
    path.write_text("{unclosed")
    with pytest.raises(TapeoutError, match="not valid YAML"):
        load_cases(path)
    with pytest.raises(TapeoutError, match="cannot read"):
        load_cases(tmp_path / "missing.yaml")


def test_duplicate_ids_are_rejected(tmp_path):
    path = _write_case(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["cases"].append(data["cases"][0])
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TapeoutError, match="duplicate case id"):
        load_cases(path)


def test_yaml_cannot_run_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(TapeoutError, match="not valid YAML"):
        load_cases(path)


@pytest.mark.parametrize(("name", "rows"), [("megatron-bridge-25.11.yaml", 16), ("nemo-24.07.yaml", 6)])
def test_heldout_training_file_is_valid_and_every_case_predicted(name, rows):
    """The held-out checks stay valid case files the training model covers."""
    path = Path(__file__).parents[1] / "benchmarks" / "heldout" / name
    cases = load_cases(path)
    assert len(cases) == rows and {c.kind for c in cases} == {"llm_training"}
    for case in cases:
        result = predict(case)
        assert result.predicted is not None and result.predicted > 0, (case.id, result)


@pytest.mark.slow
def test_heldout_inference_file_is_valid_and_every_case_predicted():
    """MLPerf Inference v5.0 and v5.1 (held out: dated after every fitted case): each case
    states its software and date and is predicted."""
    path = Path(__file__).parents[1] / "benchmarks" / "heldout" / "mlperf-inference-v5.yaml"
    cases = load_cases(path)
    assert len(cases) == 21 and {c.kind for c in cases} == {"llm_inference"}
    for case in cases:
        assert case.software is not None and case.software.date is not None, case.id
        assert case.software.date >= "2025-04", case.id
        result = predict(case)
        assert result.predicted is not None and result.predicted > 0, (case.id, result)
