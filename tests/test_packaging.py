"""Every data file the package reads ships in the wheel.

A wheel holds the Python modules plus the files that `[tool.setuptools.package-data]` names; an
editable install reads the source tree and hides any file left out. The globs are expanded the
way setuptools expands them: relative to the package's directory, `*` within one path segment,
`**` across segments.
"""

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "tapeout"


def _package_data() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-data"]


def _package_dirs() -> list[Path]:
    """The directories of `tapeout` and of every subpackage (those with an `__init__.py`)."""
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)


def _globbed(package_dir: Path, pattern: str) -> set[Path]:
    return {
        package_dir / name
        for name in glob.glob(pattern, root_dir=package_dir, recursive=True)
        if (package_dir / name).is_file()
    }


def _data_files() -> set[Path]:
    return {
        p
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


def _shipped() -> set[Path]:
    """The files the package-data globs take into the wheel; `*` as a package means every package."""
    shipped: set[Path] = set()
    for package, patterns in _package_data().items():
        dirs = _package_dirs() if package in ("", "*") else [SRC.joinpath(*package.split("."))]
        shipped.update(f for d in dirs for pattern in patterns for f in _globbed(d, pattern))
    return shipped


def test_every_data_file_is_package_data():
    missing = sorted(str(p.relative_to(PACKAGE)) for p in _data_files() - _shipped())
    assert not missing, f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"
