"""Software as an input: profiles pick the efficiency figures a run takes, by a stated hierarchy
(NAME@VERSION, NAME, its family, the chip's stack, the default), and every run says which."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from tapeout.api import serve, train
from tapeout.cli import main
from tapeout.errors import TapeoutError
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.calibration import CALIBRATION_FILE, SoftwareRef, parse_table, table
from tapeout.validate import PUBLIC_CASES, load_cases, predict


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CALIBRATION_FILE.read_text())


def with_entry(raw, figure, key, value):
    data = copy.deepcopy(raw)
    data["figures"][figure][key] = {"value": value}
    return parse_table(data, "test")


def test_the_hierarchy_takes_the_most_specific_entry(raw):
    tbl = with_entry(with_entry(raw, "memory", "serving", 0.6).raw, "memory", "vllm@2", 0.5)
    assert tbl.resolve("hopper", SoftwareRef("vllm", "2"), "serving")[0].memory == 0.5
    assert tbl.resolve("hopper", SoftwareRef("vllm", "1"), "serving")[0].memory == 0.6  # the family's
    assert tbl.resolve("hopper", SoftwareRef("trt-llm"), "serving")[0].memory == 0.6
    assert tbl.resolve("hopper", None, "serving")[0].memory == tbl.stacks["cuda"].memory
    assert tbl.resolve("hopper", SoftwareRef("nemo"), "training")[0].memory == tbl.stacks["cuda"].memory


def test_an_unknown_or_mismatched_profile_says_what_it_used():
    tbl = table()
    _, unknown = tbl.resolve("hopper", SoftwareRef("no-such-engine"), "serving")
    assert unknown.used == ("cuda", "default")
    assert "not a profile of the calibration; the cuda figures used instead" in str(unknown)
    _, wrong = tbl.resolve("hopper", SoftwareRef("trt-llm"), "training")
    assert "a serving profile, not a training one" in str(wrong)


def test_chips_without_measured_software_take_the_stated_profile():
    tbl = table()
    cal, profile = tbl.resolve("tapeout-i1")
    assert profile.asked == "mature" and "no measured software" in str(profile)
    assert cal == tbl.stacks["cuda"]
    launch, _ = tbl.resolve("tapeout-i1", SoftwareRef("launch"))
    assert launch == tbl.stacks["rocm"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["software"]["profiles"].update(cuda={"family": "serving"}), "taken by a stack"),
        (lambda d: d["software"]["profiles"].update(x={"family": "nope"}), "family 'nope' is not in"),
        (lambda d: d["software"]["profiles"].update(x={"like": "nope"}), "like 'nope' is not a stack"),
        (lambda d: d["software"].update(unmeasured="nope"), "'software.unmeasured': 'nope' is not a profile"),
        (
            lambda d: d["figures"]["memory"].update({"nope": {"value": 0.5}}),
            "unknown stacks, families or profiles",
        ),
    ],
)
def test_a_bad_software_section_is_refused(raw, change, message):
    data = copy.deepcopy(raw)
    change(data)
    with pytest.raises(TapeoutError, match=message):
        parse_table(data, "test")


@pytest.mark.parametrize("text", ["Trt-LLM", "trt llm", "trt-llm@", "@1", ""])
def test_a_malformed_software_name_is_refused(text):
    with pytest.raises(TapeoutError, match="field 'software'"):
        SoftwareRef.parse(text)


def test_runs_report_the_profile_they_used():
    out = serve("llama-2-7b", "h100-sxm", requests=8, input_len=64, output_len=8, software="vllm")
    assert out.as_dict()["software"] == {"asked": "vllm", "figures": list(out.software.used), "note": None}
    step = train("llama-3.1-8b", "h100-sxm", 8, seq_len=2048, global_batch=64, plan=TrainingPlan(zero=3),
                 software="nemo@24.07")  # fmt: skip
    assert step.as_dict()["software"]["asked"] == "nemo@24.07"


def test_the_command_line_takes_and_prints_the_software(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["tapeout", "serve", "llama-2-7b", "--hardware", "h100-sxm", "--chips", "1",
                                     "--requests", "8", "--software", "gpt-fast", "--json"])  # fmt: skip
    main()
    assert json.loads(capsys.readouterr().out)["software"]["asked"] == "gpt-fast"


def test_a_case_takes_the_figures_of_its_own_software(raw, monkeypatch):
    """An entry for one profile moves that profile's cases only."""
    cases = {c.id: c for c in load_cases(PUBLIC_CASES)}
    fast, other = cases["inf-gptfast-llama2-7b-a100-bf16-bs1"], cases["inf-trtllm017-llama31-8b-a100-128-128"]
    before = predict(fast).predicted, predict(other).predicted
    tbl = with_entry(raw, "memory", "gpt-fast", 0.5)
    monkeypatch.setattr("tapeout.perf.calibration.table", lambda: tbl)
    after = predict(fast).predicted, predict(other).predicted
    assert after[0] < before[0] and after[1] == before[1]
