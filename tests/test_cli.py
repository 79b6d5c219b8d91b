import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tapeout.cli import app

runner = CliRunner()


def test_hardware_list_and_show_json():
    out = runner.invoke(app, ["hardware", "list", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert {"h100-sxm", "tpu-v5p", "mi300x"} <= {r["id"] for r in rows}
    out = runner.invoke(app, ["hardware", "show", "h200-sxm", "--json"])
    data = json.loads(out.stdout)
    assert data["id"] == "h200-sxm"
    assert data["memory"]["capacity_gb"] == 141


def test_models_list_and_show_json():
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert {"llama-3.1-405b", "dlrm-v2"} <= {r["id"] for r in rows}
    data = json.loads(runner.invoke(app, ["models", "show", "mixtral-8x7b", "--json"]).stdout)
    assert data["id"] == "mixtral-8x7b"
    assert data["params"] < data["published_params"] * 1.01


def test_tables_print():
    for args in (["hardware", "list"], ["hardware", "show", "tpu-v4"], ["models", "show", "deepseek-v3"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 0, out.output


@pytest.mark.validation
def test_validate_json_and_table(tmp_path, monkeypatch, public_results):
    import yaml

    from tapeout import validate
    from tapeout.validate import PUBLIC_CASES

    cases = yaml.safe_load(PUBLIC_CASES.read_text())
    cases["cases"] = [c for c in cases["cases"] if c["kind"] in ("gemm", "llm_training")]
    small = tmp_path / "cases.yaml"
    small.write_text(yaml.safe_dump(cases))
    out = runner.invoke(app, ["validate", str(small), "--json"])
    assert out.exit_code == 0
    report = json.loads(out.stdout)
    assert report["summary"]["by_kind"]["gemm"]["mape"] < 0.10
    assert set(report["summary"]["by_confidence"]) == {"confirmed", "unconfirmed"}
    monkeypatch.setattr(validate, "predict_all", lambda path: public_results)  # computed once a session
    table = runner.invoke(app, ["validate"])
    assert table.exit_code == 0
    assert "validation: bundled public cases" in table.stdout
    assert "unsupported: 0" in table.stdout
    assert "MAPE" in table.stdout and "by confidence" in table.stdout and "trt-llm" in table.stdout


def test_bad_input_exits_2_with_a_message():
    proc = subprocess.run(
        [sys.executable, "-c", "from tapeout.cli import main; main()", "hardware", "show", "h1000"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown hardware id 'h1000'" in proc.stderr
    assert "Traceback" not in proc.stderr
