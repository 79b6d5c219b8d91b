"""`cost`: one call from a chip (catalog id or design file) to its area, yield, cost and power."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tapeout.checks as checks
from tapeout._yaml import load_data_file
from tapeout.cost.unit import check_design, unit_cost
from tapeout.errors import TapeoutError, entry_id, require_mapping, shown
from tapeout.hardware.catalog import chip_from_mapping, get_chip
from tapeout.hardware.design import expand_design
from tapeout.hardware.spec import ChipSpec, PriceEntry

# Units a design's NRE is spread over unless told otherwise: the H20 purchase of one year
# (research/hardware_cost.md section 0, "over 200,000 H20").
DEFAULT_VOLUME = 200_000
MAX_LEVY = 10.0  # a levy of 1,000 %: past any tariff in force, and past that a slip of units


def load_chip(ref: str) -> ChipSpec:
    """A catalog id, or the path of a design file (`hardware/designs/*.yaml` schema)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        data = require_mapping(load_data_file(path), str(path), None, "<root>")
        return chip_from_mapping(expand_design(data, str(path)), str(path), entry_id(data))
    return get_chip(ref)


def market_price(chip: ChipSpec, region: str | None = None) -> PriceEntry | None:
    """The newest catalog purchase price, of the market `region` names when given (an error
    naming the regions that have a price when it has none); None when the catalog has none."""
    bought = [p for p in chip.price if p.usd is not None]
    if region is not None:
        regional = [p for p in bought if p.region == region]
        if not regional:
            known = sorted({p.region for p in bought if p.region}) or ["none"]
            raise TapeoutError(
                f"field 'region': {chip.id} has no catalog price in region {shown(region)} "
                f"(regions with a price: {', '.join(known)})"
            )
        bought = regional
    return max(bought, key=lambda p: p.date) if bought else None


def cost(
    ref: str, volume: int | None = None, *, region: str | None = None, levy: float = 0.0
) -> dict[str, Any]:
    """Area, yield, unit cost and power of a chip; our designs are checked and carry their NRE
    over `volume` units (default 200,000). A bought chip also shows its market price (of
    `region`'s market when given) and that price with an export `levy` (a fraction) on top.

    >>> out = cost("tapeout-i1")
    >>> out["published_die_area_mm2"] is None and out["die_area_mm2"] < 858
    True
    """
    levy = checks.number("levy", levy, "(a fraction of the price, 0.25 = 25 %)", low=0, high=MAX_LEVY)
    volume = checks.optional_count("volume", volume, high=checks.MAX_COUNT, unit="units")
    chip = load_chip(ref)
    ours = chip.vendor == "tapeout"
    if ours:
        check_design(chip)
    unit = unit_cost(chip, volume=(volume or DEFAULT_VOLUME) if ours else None)
    newest = market_price(chip, region)
    return {
        "id": chip.id,
        "name": chip.name,
        "process_node": chip.process_node,
        "published_die_area_mm2": chip.die_area_mm2,
        **unit.as_dict(),
        "market_price": newest.model_dump(exclude_none=True) if newest else None,
        "levy": levy,
        "price_with_levy_usd": newest.usd * (1 + levy) if newest and newest.usd else None,
    }
