"""`cost`: one call from a chip (catalog id or design file) to its area, yield, cost and power."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapeout._yaml import load_data_file
from tapeout.cost.unit import check_design, unit_cost
from tapeout.errors import require_mapping
from tapeout.hardware.catalog import chip_from_mapping, get_chip
from tapeout.hardware.design import expand_design
from tapeout.hardware.spec import ChipSpec

# Units a design's NRE is spread over unless told otherwise: the H20 purchase of one year
# (research/hardware_cost.md section 0, "over 200,000 H20").
DEFAULT_VOLUME = 200_000


def load_chip(ref: str) -> ChipSpec:
    """A catalog id, or the path of a design file (`hardware/designs/*.yaml` schema)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        data = require_mapping(load_data_file(path), str(path), None, "<root>")
        return chip_from_mapping(expand_design(data, str(path)), str(path), str(data.get("id", "")) or None)
    return get_chip(ref)


def cost(ref: str, volume: int | None = None) -> dict[str, Any]:
    """Area, yield, unit cost and power of a chip; our designs are checked and carry their NRE
    over `volume` units (default 200,000).

    >>> out = cost("tapeout-i1")
    >>> out["published_die_area_mm2"] is None and out["die_area_mm2"] < 858
    True
    """
    chip = load_chip(ref)
    ours = chip.vendor == "tapeout"
    if ours:
        check_design(chip)
    unit = unit_cost(chip, volume=(volume or DEFAULT_VOLUME) if ours else None)
    prices = [p for p in chip.price if p.usd is not None]
    newest = max(prices, key=lambda p: p.date) if prices else None
    return {
        "id": chip.id,
        "name": chip.name,
        "process_node": chip.process_node,
        "published_die_area_mm2": chip.die_area_mm2,
        **unit.as_dict(),
        "market_price": newest.model_dump(exclude_none=True) if newest else None,
    }
