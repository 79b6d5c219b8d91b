"""Software maturity: the curve fitted to dated ratios of the same benchmark on the same system."""

from __future__ import annotations

import copy

import pytest
import yaml

from tapeout.errors import TapeoutError
from tapeout.perf.maturity import MATURITY_FILE, Maturity, Observation, fit, load, maturity


def test_the_fit_recovers_a_known_curve():
    truth = Maturity(0.5, 6.0, ())
    spans = [(0, 3), (0, 6), (3, 12), (6, 18), (12, 24)]
    obs = tuple(Observation(f"o{i}", "x", s, e, truth.share(e) / truth.share(s), "synthetic")
                for i, (s, e) in enumerate(spans))  # fmt: skip
    m = fit(obs)
    assert m.a == pytest.approx(0.5, abs=0.01) and m.tau_months == pytest.approx(6.0, rel=0.05)


def test_the_shipped_curve_rises_and_answers_in_months():
    m = maturity()
    assert 0 < m.share(0) < m.share(6) < m.share(24) < 1
    assert 0 < m.months_to(0.8) < m.months_to(0.9) < m.months_to(0.95)
    assert len(m.observations) >= 4 and all(o.source for o in m.observations)
    with pytest.raises(TapeoutError, match="field 'share'"):
        m.months_to(1.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ratio", "fast", "field 'ratio'"),
        ("ratio", 100.0, "field 'ratio'"),
        ("after", "2023-13", "field 'after': expected a month as YYYY-MM"),
        ("before", "2025-01", "expected debut <= before < after"),
    ],
)
def test_a_bad_observation_is_refused(tmp_path, field, value, message):
    data = yaml.safe_load(MATURITY_FILE.read_text())
    bad = copy.deepcopy(data)
    bad["observations"][0][field] = value
    path = tmp_path / "maturity.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(TapeoutError, match=message):
        load(path)
