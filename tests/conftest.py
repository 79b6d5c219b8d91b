"""Test tiers and shared fixtures.

Every test is `unit` unless marked `validation` or `slow` (`pytest -m unit` runs the fast tier);
the README's test command runs them all. The public validation run is computed once per session.
"""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("validation", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def public_results():
    """Every public case predicted, once per test session."""
    from tapeout.validate import PUBLIC_CASES, predict_all

    return predict_all(PUBLIC_CASES)


@pytest.fixture(scope="session")
def public_report(public_results):
    from tapeout.validate import report

    return report(public_results)
