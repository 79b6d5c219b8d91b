"""Every docstring example in the package runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import tapeout

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(tapeout.__path__, "tapeout.")
    if not m.name.startswith("tapeout.compiler")
)


SLOW = {"tapeout.plan.fleet", "tapeout.search.training"}  # a fleet plan and a plan search


@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in MODULES]
)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"
