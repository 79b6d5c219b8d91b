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


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} example(s) failed in {name}"
