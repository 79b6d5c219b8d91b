"""The hardware catalog: one YAML file per chip under `catalog/`, and our own designs under
`designs/` (expanded by `hardware.design`), looked up by exact id."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pydantic

from tapeout._yaml import deep_merge, load_data_file
from tapeout.errors import TapeoutError, entry_id, from_validation, require_mapping, unknown_id
from tapeout.hardware.design import expand_design
from tapeout.hardware.spec import ChipSpec

CATALOG_DIR = Path(__file__).parent / "catalog"
DESIGNS_DIR = Path(__file__).parent / "designs"


def chip_from_mapping(
    data: Mapping[str, Any], origin: str | None = None, entry: str | None = None
) -> ChipSpec:
    try:
        return ChipSpec.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, entry) from None


def load_chip_file(path: Path) -> ChipSpec:
    data = require_mapping(load_data_file(path), str(path), None, "<root>")
    chip = chip_from_mapping(data, str(path), entry_id(data))
    if path.parent == CATALOG_DIR and chip.id != path.stem:
        raise TapeoutError(f"{path}: id {chip.id!r} must match the file name {path.stem!r}")
    return chip


@cache
def _raw_catalog() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        out[path.stem] = dict(require_mapping(load_data_file(path), str(path), None, "<root>"))
    for path in sorted(DESIGNS_DIR.glob("*.yaml")):
        out[path.stem] = expand_design(
            require_mapping(load_data_file(path), str(path), None, "<root>"), str(path)
        )
    return out


def chip_ids() -> list[str]:
    return sorted(_raw_catalog())


@cache
def get_chip(chip_id: str) -> ChipSpec:
    """A catalog chip by exact id.

    >>> get_chip("h100-sxm").memory.capacity_gb
    80.0
    """
    raw = _raw_catalog()
    if chip_id not in raw:
        raise unknown_id("hardware id", chip_id, raw)
    folder = DESIGNS_DIR if (DESIGNS_DIR / f"{chip_id}.yaml").exists() else CATALOG_DIR
    return chip_from_mapping(raw[chip_id], str(folder / f"{chip_id}.yaml"), chip_id)


def all_chips() -> list[ChipSpec]:
    return [get_chip(i) for i in chip_ids()]


def resolve_chip(
    ref: str | Mapping[str, Any], origin: str | None = None, entry: str | None = None
) -> ChipSpec:
    """A catalog id, or a mapping `{base: ID, field: value, ...}` overriding catalog fields
    (nested sections merge: `{base: h100-sxm, memory: {bandwidth_gb_s: 3000}}`)."""
    if isinstance(ref, str):
        return get_chip(ref)
    if not isinstance(ref, Mapping):
        raise TapeoutError(f"{origin or ''}: {entry or ''}: field 'hardware': expected an id or a mapping")
    data = dict(ref)
    base = data.pop("base", None)
    if base is None:
        return chip_from_mapping(data, origin, entry)
    if not isinstance(base, str):
        raise TapeoutError(f"{origin}: {entry}: field 'hardware.base': expected a catalog id")
    raw = _raw_catalog()
    if base not in raw:
        raise unknown_id("hardware id", base, raw)
    merged = deep_merge(raw[base], data)
    return chip_from_mapping(merged, origin, entry)
