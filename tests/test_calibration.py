import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tapeout.calibrate import RANGES, calibrate, write_calibration
from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.perf import System, op_cost
from tapeout.perf.calibration import CALIBRATION_FILE, ENV_VAR, FIGURES, LIMITS, load_table, table, use
from tapeout.validate import PUBLIC_CASES
from tapeout.workloads.ops import Matmul

runner = CliRunner()


@pytest.fixture(scope="module")
def result():
    use(CALIBRATION_FILE)  # the shipped figures, whatever TAPEOUT_CALIBRATION says
    try:
        yield calibrate(PUBLIC_CASES)
    finally:
        use(None)


@pytest.mark.slow  # the refit and its leave-one-out predictions take tens of seconds
def test_the_file_holds_what_the_public_cases_give(result):
    """Every fitted figure in calibration.yaml is re-derived from the public cases alone (to the
    search's resolution: fits that feed each other settle within a few of its steps)."""
    for row in result["figures"]:
        step = RANGES.get(row["figure"], (0.0, 1.0, 0.0))[2]
        assert row["fitted"] == pytest.approx(row["current"], abs=max(0.002, 4 * step)), row


@pytest.mark.slow
def test_held_out_error_is_reported_for_every_op_and_training_case(result):
    kinds = result["by_kind"]
    assert sum(kinds[k]["n"] for k in ("gemm", "attention", "memory", "collective")) == 20
    assert kinds["llm_training"]["n"] == 35
    ops = [c for c in result["cases"] if not c["id"].startswith(("train-", "op-layer-"))]
    in_sample = sum(abs(c["in_sample"]) for c in ops) / len(ops)
    held_out = sum(abs(c["held_out"]) for c in ops) / len(ops)
    assert held_out >= in_sample
    assert held_out < 0.15
    unfitted = [c for c in result["cases"] if not c["fitted_on"]]
    assert {c["id"] for c in unfitted} >= {"comm-allreduce-b200x32-4node-16g", "op-mamf-bf16-mi300x"}


def test_every_family_resolves_to_figures():
    from tapeout.hardware import all_chips

    for chip in all_chips():
        cal = table().for_family(chip.family)
        assert 0 < cal.matmul("bf16") <= 1
        assert 0 < cal.memory <= 1


# ---- a calibration file the user owns -------------------------------------------------------
@pytest.fixture
def shipped():
    """The shipped figures in force before and after, whatever a test chose or set."""
    saved = os.environ.pop(ENV_VAR, None)
    use(None)
    try:
        yield
    finally:
        os.environ.pop(ENV_VAR, None)
        if saved is not None:
            os.environ[ENV_VAR] = saved
        use(None)


def _with(tmp_path: Path, old: str, new: str, name: str = "mine.yaml") -> Path:
    """The shipped file with one line changed."""
    text = CALIBRATION_FILE.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / name
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def _cases(tmp_path: Path, scales: dict[str, float]) -> Path:
    """Public gemm cases with their measured values scaled."""
    data = yaml.safe_load(PUBLIC_CASES.read_text(encoding="utf-8"))
    by_id = {c["id"]: c for c in data["cases"]}
    cases = [{**by_id[i], "value": by_id[i]["value"] * k} for i, k in scales.items()]
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"schema": data["schema"], "cases": cases}), encoding="utf-8")
    return path


CUDA_16 = "    cuda: {value: 0.850, fit: gemm/16bit/cuda}"
# A100 measured at a tenth of its real rate, H100 as published: the two cases contradict each
# other, so each predicted from the other's fit misses worse than the shipped figures do.
BOGUS = {"op-mamf-bf16-h100sxm": 1.0, "op-mamf-bf16-a100sxm": 0.1}


def test_writing_to_a_user_path_is_atomic_and_leaves_the_package_file_alone(tmp_path, monkeypatch, shipped):
    before = CALIBRATION_FILE.read_bytes()
    out = tmp_path / "mine.yaml"
    assert write_calibration({("matmul_16bit", "cuda"): 0.5}, out) == out.resolve()
    assert CALIBRATION_FILE.read_bytes() == before
    # The whole file, its comments and layout kept; only the fitted entry differs.
    assert out.read_text(encoding="utf-8") == before.decode().replace(
        CUDA_16, CUDA_16.replace("0.850", "0.500")
    )
    assert load_table(out).stacks["cuda"].matmul_16bit == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]  # no temporary file left

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    written = out.read_bytes()
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(TapeoutError, match=r"mine\.yaml: cannot write: No space left"):
        write_calibration({("matmul_16bit", "cuda"): 0.6}, out)
    assert out.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]
    assert CALIBRATION_FILE.read_bytes() == before


def test_the_package_file_is_never_written(tmp_path, shipped):
    before = CALIBRATION_FILE.read_bytes()
    link = tmp_path / "link.yaml"
    link.symlink_to(CALIBRATION_FILE)
    for path in (CALIBRATION_FILE, link):
        with pytest.raises(TapeoutError, match="package's own calibration file") as err:
            write_calibration({("matmul_16bit", "cuda"): 0.5}, path)
        assert str(path) in str(err.value)
    # Refused before the fit: a case file that cannot be read is never reached.
    out = runner.invoke(
        app, ["calibrate", "--cases", str(tmp_path / "none.yaml"), "--write", str(CALIBRATION_FILE)]
    )
    assert isinstance(out.exception, TapeoutError)
    assert "package's own calibration file" in str(out.exception)
    assert CALIBRATION_FILE.read_bytes() == before


def test_write_needs_a_path(tmp_path):
    out = runner.invoke(app, ["calibrate", "--write"])
    assert out.exit_code == 2
    assert "requires an argument" in out.output
    out = runner.invoke(app, ["calibrate", "--write", "--json"])  # the option would take --json as its path
    assert isinstance(out.exception, TapeoutError)
    assert "--write needs the PATH" in str(out.exception)
    with pytest.raises(TapeoutError, match="give the path"):
        calibrate(PUBLIC_CASES, write=True)  # the old flag
    notes = tmp_path / "notes.yaml"
    notes.write_text("just: notes\n")
    with pytest.raises(TapeoutError, match="not a calibration file"):
        write_calibration({}, notes)
    assert notes.read_text() == "just: notes\n"


def test_use_and_the_environment_choose_the_figures(tmp_path, shipped):
    h100 = get_chip("h100-sxm")
    gemm = Matmul(m=8192, n=8192, k=8192)
    assert System.of(h100).cal.matmul_16bit == 0.850
    shipped_s = op_cost(gemm, System.of(h100)).time_s
    mine = _with(tmp_path, CUDA_16, CUDA_16.replace("0.850", "0.425"))

    use(mine)
    assert System.of(h100).cal.matmul_16bit == 0.425
    assert op_cost(gemm, System.of(h100)).time_s == pytest.approx(2 * shipped_s, rel=0.05)
    with pytest.raises(TapeoutError, match=r"bad\.yaml"):  # a bad file changes nothing
        use(_with(tmp_path, CUDA_16, CUDA_16.replace("0.850", "1.7"), "bad.yaml"))
    assert System.of(h100).cal.matmul_16bit == 0.425

    use(None)
    assert System.of(h100).cal.matmul_16bit == 0.850
    assert op_cost(gemm, System.of(h100)).time_s == shipped_s

    os.environ[ENV_VAR] = str(mine)
    use(None)  # read when nothing was chosen
    assert System.of(h100).cal.matmul_16bit == 0.425
    os.environ[ENV_VAR] = str(tmp_path / "missing.yaml")
    use(None)
    with pytest.raises(TapeoutError, match=f"missing.yaml: cannot read.*{ENV_VAR}"):
        System.of(h100)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            CUDA_16,
            CUDA_16.replace("0.850", "1.3"),
            r"figures\.matmul_16bit\.cuda: value 1\.3 is outside the allowed range \(0, 1\]",
        ),
        (
            "default: {value: 0.25}",
            "default: {value: 1.0}",
            r"figures\.idle_power_fraction\.default: value 1\.0 is outside .*\[0, 1\)",
        ),
        (
            "default: {value: 0.875, fit: memory/all}",
            "default: {value: .nan, fit: memory/all}",
            r"figures\.memory\.default: value nan is not finite",
        ),
        (
            "default: {value: 4.0}",
            "default: {value: -1}",
            r"figures\.kernel_overhead_us\.default: value -1 is outside .*\[0, 1000\] us",
        ),
        (
            "cuda: {value: 0.850, fit: gemm/16bit/cuda}",
            "cuda: {value: 0, fit: gemm/16bit/cuda}",
            r"figures\.matmul_16bit\.cuda: value 0 is outside .*\(0, 1\]",
        ),
        (
            "cuda: [ampere, hopper, blackwell]",
            "cuda: [ampere, hopper, cdna3]",
            r"stacks\.rocm.*'cdna3' is already in stack 'cuda'",
        ),
    ],
)
def test_an_out_of_range_figure_is_refused(tmp_path, shipped, old, new, message):
    path = _with(tmp_path, old, new)
    with pytest.raises(TapeoutError, match=message) as err:
        use(path)
    assert str(err.value).startswith(str(path))
    assert table().stacks["cuda"].matmul_16bit == 0.850


def test_every_figure_has_limits_and_the_shipped_file_is_within_them():
    assert set(LIMITS) == set(FIGURES)
    load_table(CALIBRATION_FILE)


def test_a_bogus_fit_is_refused_unless_forced(tmp_path, shipped):
    before = CALIBRATION_FILE.read_bytes()
    cases, out = _cases(tmp_path, BOGUS), tmp_path / "fit.yaml"
    with pytest.raises(
        TapeoutError, match=r"held-out .*MAPE \d+\.\d% is worse than the \d+\.\d%.*--force"
    ) as err:
        calibrate(cases, write=out)
    assert "nothing written" in str(err.value)
    assert not out.exists()

    got = runner.invoke(app, ["calibrate", "--cases", str(cases), "--write", str(out), "--force", "--json"])
    assert got.exit_code == 0, got.output
    report = json.loads(got.stdout)
    assert report["written"] == str(out.resolve())
    assert report["forced"] is True
    assert report["mape_held_out"] > report["mape_current"]
    assert load_table(out).stacks["cuda"].matmul_16bit < 0.85
    assert table().stacks["cuda"].matmul_16bit == 0.850  # written, not put in force
    assert CALIBRATION_FILE.read_bytes() == before


def test_a_better_fit_is_written_and_the_cli_says_how_to_use_it(tmp_path, shipped):
    # Both cases at 90 % of the published rate: the fit predicts each from the other well.
    cases, out = (
        _cases(tmp_path, {"op-mamf-bf16-h100sxm": 0.9, "op-mamf-bf16-a100sxm": 0.9}),
        tmp_path / "[b]fit.yaml",
    )
    got = runner.invoke(app, ["calibrate", "--cases", str(cases), "--write", str(out)])
    assert got.exit_code == 0, got.output
    text = " ".join(got.stdout.split())
    assert f"wrote {out.resolve()}" in text  # the brackets printed, not taken as markup
    assert f"--calibration {out.resolve()}" in text and f"{ENV_VAR}={out.resolve()}" in text
    assert "--force" not in text
    assert load_table(out).stacks["cuda"].matmul_16bit == pytest.approx(0.85 * 0.9, abs=0.03)
    with pytest.raises(TapeoutError, match="only with --write"):
        runner.invoke(app, ["calibrate", "--force"], catch_exceptions=False)


def test_the_planner_s_capacities_follow_the_figures_in_force(tmp_path, shipped):
    """The planner caches capacities by demand and chip id; choosing other figures must not
    return what the old ones gave."""
    from tapeout.plan.capacity import recsys_capacity
    from tapeout.plan.demand import parse_demand

    demand = parse_demand({"candidates": [{"hardware": "h100-sxm"}], "demands": [
        {"kind": "recsys", "name": "r", "model": "dlrm-v2", "qps": 1e5, "latency_limit_s": 0.01,
         "pairs_per_sample": 100}]}).demands[0]  # fmt: skip
    before = recsys_capacity(demand, "h100-sxm").units_per_s
    same = tmp_path / "same.yaml"
    same.write_bytes(CALIBRATION_FILE.read_bytes())
    use(same)  # the same figures, chosen again
    assert recsys_capacity(demand, "h100-sxm").units_per_s == before
    use(
        _with(
            tmp_path, "cuda: {value: 0.776, fit: gemm/8bit/cuda}", "cuda: {value: 0.388, fit: gemm/8bit/cuda}"
        )
    )
    assert recsys_capacity(demand, "h100-sxm").units_per_s < before
    use(None)
    assert recsys_capacity(demand, "h100-sxm").units_per_s == before


def test_a_joint_fit_writes_the_entries_the_file_has(tmp_path, shipped):
    """Attention and its overhead blocks are fitted together; the CUDA stack has its own attention
    entry but takes the default overhead, so the written file does too."""
    out = tmp_path / "joint.yaml"
    write_calibration({("attention", "cuda"): 0.35, ("attention_overhead_blocks", "cuda"): 1.3}, out)
    use(out)
    cal = System.of(get_chip("h100-sxm")).cal
    assert cal.attention == 0.35 and cal.attention_overhead_blocks == 1.25
