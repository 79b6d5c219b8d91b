import pytest

from tapeout.calibrate import calibrate
from tapeout.perf.calibration import table
from tapeout.validate import PUBLIC_CASES

pytestmark = pytest.mark.slow  # the refit and its leave-one-out predictions take tens of seconds


@pytest.fixture(scope="module")
def result():
    return calibrate(PUBLIC_CASES)


def test_the_file_holds_what_the_public_cases_give(result):
    """Every fitted figure in calibration.yaml is re-derived from the public cases alone."""
    for row in result["figures"]:
        assert row["fitted"] == pytest.approx(row["current"], abs=0.002), row


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
