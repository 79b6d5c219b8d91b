"""Inputs a careless or hostile user gives the CLI: each ends in one line on stderr naming the
option, the value and the unit or range, exit status 2, no traceback and nothing on stdout; with
`--json` the line is a JSON object. (The data-file cases are in test_loading.py.)"""

from __future__ import annotations

import json
import math
import sys

import pytest

from tapeout.cli import main

SERVE = ["serve", "llama-2-7b", "--hardware", "h100-sxm", "--chips", "1"]
RECSYS = ["recsys", "dlrm-v2", "--hardware", "h100-sxm", "--chips", "8"]
TRAIN = [
    "train",
    "llama-3.1-8b",
    "--hardware",
    "h100-sxm",
    "--chips",
    "8",
    "--seq-len",
    "2048",
    "--global-batch",
    "64",
]


def run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["tapeout", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serve", "[/red]", "--hardware", "h100-sxm", "--chips", "1"],
            "[/red]: cannot read: file not found",
        ),
        (["serve", "x", "--hardware", "[/red]", "--chips", "1"], "unknown model id 'x'"),
        (
            ["serve", "[bold red]oops", "--hardware", "h100-sxm", "--chips", "1"],
            "unknown model id '[bold red]oops'",
        ),
        (["cost", "[/red].yaml"], "unknown hardware id '[/red].yaml'"),
        (
            [*SERVE, "--input-len", "inf"],
            "field 'input_len': must be a finite number >= 1 and <= 100,000,000 tokens, got inf",
        ),
        (
            [*SERVE, "--output-len", "nan"],
            "field 'output_len': must be a finite number >= 1 and <= 100,000,000 tokens, got nan",
        ),
        ([*SERVE, "--rate", "1e-300"], "field 'rate': must be a finite number >= 1e-06 requests/s"),
        ([*SERVE, "--rate", "inf"], "field 'rate': must be a finite number"),
        ([*SERVE, "--ttft-limit", "-1"], "field 'ttft_limit_s': must be a finite number > 0 s, got -1"),
        ([*SERVE, "--max-batch", "0"], "field 'max_batch': must be a whole number >= 1 sequences, got 0"),
        (
            [*SERVE, "--requests", "100000000"],
            "field 'requests': must be a whole number >= 1 and <= 10,000,000",
        ),
        ([*SERVE, "--input-len", "100000"], "longer than the model's context of 4,096 tokens"),
        (
            [*SERVE, "--input-len", "1e30", "--allow-long-context"],
            "field 'input_len': must be a finite number >= 1 and <= 100,000,000 tokens, got 1e+30",
        ),
        (
            ["--max-file-mb", "1e308", "validate"],
            "--max-file-mb: must be a positive, finite number of MB, got 1e+308 (at most 1,048,576)",
        ),
        ([*SERVE, "--requests", "5000000", "--max-seconds", "1"], "raise it with --max-seconds"),
        (
            ["serve", "llama-2-7b", "--hardware", "a100-sxm-80gb", "--chips", "1", "--precision", "fp8"],
            "field 'precision': a100-sxm-80gb has no fp8 matrix units; it runs",
        ),
        (
            ["serve", "llama-2-7b", "--hardware", "a100-sxm-80gb", "--chips", "1", "--precision", "fp4"],
            "has no fp4 matrix units",
        ),
        ([*RECSYS, "--pairs-per-sample", "nan"], "field 'pairs_per_sample': must be a finite number >= 1"),
        ([*RECSYS, "--batch", "0"], "field 'batch': must be a whole number >= 1 samples, got 0"),
        (
            [*RECSYS, "--batch", "1000000000000"],
            "field 'batch': 1,000,000,000,000 user-item pairs per chip keep",
        ),
        ([*RECSYS, "--latency-limit", "0"], "field 'latency_limit_s': must be a finite number > 0 s"),
        (
            ["recsys", "dlrm-v2", "--hardware", "h100-sxm", "--chips", "100000000", "--sharding", "table"],
            "field 'chips': must be a whole number >= 1 and <= 1,000,000 chips",
        ),
        ([*TRAIN, "--chips-per-node", "0"], "field 'chips_per_node': must be a whole number >= 1"),
        (
            [*TRAIN, "--precision", "fp8", "--hardware", "a100-sxm-80gb"],
            "a100-sxm-80gb has no fp8 matrix units",
        ),
        (
            [*TRAIN[:-4], "--seq-len", "200000", "--global-batch", "8"],
            "longer than the model's context of 131,072",
        ),
        (
            [*TRAIN, "--search", "--budget", "100000000"],
            "a search of up to 100,000,000 plans would take about",
        ),
        (
            ["cost", "tapeout-i1", "--volume", "0"],
            "field 'volume': must be a whole number >= 1 and <= 1,000,000,000,000 units, got 0",
        ),
        (["cost", "h100-sxm", "--levy", "inf"], "field 'levy': must be a finite number >= 0 and <= 10"),
        (["cost", "h100-sxm", "--hardware", "b200"], "two chips given"),
        (["cost"], "give the chip"),
        (["hardware", "show", "h100-sxn"], "did you mean h100-sxm"),
        (["models", "show", "llama-3.1-8"], "did you mean llama-3.1-8b"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(args, message, monkeypatch, capsys):
    code, out, err = run(args, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert "Traceback" not in err and message in " ".join(err.split())


def test_json_errors_are_one_json_object_on_stderr(monkeypatch, capsys):
    for args in (
        ["cost", "h100-sxm", "--levy", "inf", "--json"],
        [*SERVE, "--bogus", "--json"],
        [*RECSYS[:4], "--json"],
    ):
        code, out, err = run(args, monkeypatch, capsys)
        assert code == 2 and out == ""
        assert set(json.loads(err)) == {"error"}


def test_chips_is_required_by_every_workload(monkeypatch, capsys):
    for cmd in (SERVE, RECSYS, TRAIN):
        i = cmd.index("--chips")
        code, _, err = run(cmd[:i] + cmd[i + 2 :], monkeypatch, capsys)
        assert code == 2 and "--chips" in err


def test_zero_workers_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    demand = tmp_path / "d.yaml"
    demand.write_text(
        "candidates: [{hardware: h100-sxm}]\n"
        "demands: [{kind: recsys, name: r, model: dlrm-v2, qps: 1000, latency_limit_s: 0.01}]\n"
    )
    code, _, err = run(["plan", str(demand), "--workers", "0"], monkeypatch, capsys)
    assert code == 2 and "field 'workers': must be a whole number >= 1" in err


def test_json_output_has_no_nan_or_infinity(monkeypatch, capsys):
    # one output token each: no time per output token, null in JSON
    code, out, _ = run([*SERVE, "--requests", "4", "--output-len", "1", "--json"], monkeypatch, capsys)
    assert code == 0
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert data["tpot_s"]["p99"] is None


def test_outputs_say_what_they_assumed(monkeypatch, capsys):
    _, out, _ = run([*SERVE, "--requests", "8"], monkeypatch, capsys)
    assert "all requests queued at once (offline" in out and "one replica simulated" in out
    assert "weights bf16" in out
    _, out, _ = run(RECSYS, monkeypatch, capsys)
    assert "1 user-item pair(s) per sample" in out and "int8 dense part" in out
    assert not any(word in out for word in ("True", "None", "{", "e+"))
    _, out, _ = run(["cost", "h100-sxm"], monkeypatch, capsys)
    assert "against a budget (TDP) of 700 W" in " ".join(out.split()) and "e+" not in out
    _, out, _ = run([*TRAIN, "--zero", "1"], monkeypatch, capsys)
    assert "bf16 matmuls" in out


def test_long_context_is_accepted_when_asked(monkeypatch, capsys):
    code, out, err = run(
        [*SERVE, "--input-len", "6000", "--output-len", "2", "--requests", "1", "--allow-long-context", "--json"],
        monkeypatch, capsys,
    )  # fmt: skip
    assert code == 0, err
    assert math.isfinite(json.loads(out)["ttft_s"]["p99"])


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        (["validate"], b"\xff\xfe\x00binary", "not a text file (binary or not UTF-8)"),
        (["cost"], b"\x89PNG\r\n\x1a\n", "not a text file (binary or not UTF-8)"),
        (["plan"], "caf\xe9".encode("latin-1"), "not a text file (binary or not UTF-8)"),
        (["validate"], f"schema: tapeout-validation/1\ncases: []\nbomb:\n  {BOMB}".encode(), "alias"),
        (["plan"], f"candidates: []\ndemands: []\nx: {{}}\n{BOMB}".encode(), "alias"),
        ([*SERVE, "--trace"], b"\x00\x01\x02", "not a text file (binary or not UTF-8)"),
        (
            [*SERVE, "--trace"],
            b"arrival_s,input_len,output_len\n0,10,5,9\n",
            "line 2: 4 fields, the header names 3",
        ),
        (
            [*SERVE, "--trace"],
            b"arrival_s,input_len,output_len\n0,10\n",
            "line 2: field 'output_len' is missing",
        ),
        (
            [*SERVE, "--trace"],
            b"arrival_s,input_len,output_len\n0,1e30,5\n",
            "must be an integer >= 1 and <= 100,000,000",
        ),
    ],
)
def test_bad_files_are_refused_with_their_name(command, content, message, tmp_path, monkeypatch, capsys):
    suffix = ".csv" if "--trace" in command else ".yaml"
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    code, out, err = run([*command, str(path)], monkeypatch, capsys)
    line = " ".join(err.split())
    assert code == 2 and out == "" and "Traceback" not in err
    assert str(path) in line and message in line


def test_devices_and_directories_are_not_read(tmp_path, monkeypatch, capsys):
    for target, what in (("/dev/zero", "character device"), (str(tmp_path), "directory")):
        code, _, err = run(["validate", target], monkeypatch, capsys)
        assert code == 2 and what in err
