"""Total cost of ownership of one chip in a datacenter, and the price of a unit of work.

Capital is the chip (as bought, levy included), its share of a server, its share of the
cluster network and its share of the facility; running cost is electricity. Both are spread
over the depreciation period to give dollars per chip-hour, the figure every cost per unit of
work divides. Defaults are research/hardware_cost.md section 4.9, each with its source:

- server: $4,001 per chip, the non-accelerator bill of a DGX H100 ($32,010 / 8; SemiAnalysis
  via Epoch AI, section 4.8);
- network: 19 % of total cluster capital (Epoch's CLUSTER_INTERCONNECT_COST_FRACTION; 20 % by
  amcompute, section 4.4);
- server power: 1.8 x chip TDP, drawn at 75 % on average (Epoch's default GPU figures, 4.3);
- PUE 1.1 (hyperscaler, Epoch, 4.2); electricity $0.0826/kWh (US industrial 2025, 4.1);
- facility: $11 per W of IT load ($10-12M per MW, 4.6), over 15 years (an assumption the
  notes flag as unsourced);
- depreciation: 5 years (Epoch from 2023; Amazon's AI subset, 4.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from tapeout.errors import TapeoutError
from tapeout.units import Num

HOURS_PER_YEAR = 8766.0  # 365.25 days


@dataclass(frozen=True, slots=True, kw_only=True)
class TcoAssumptions:
    years: float = 5.0
    server_usd_per_chip: float = 4001.0
    network_fraction: float = 0.19
    server_power_factor: float = 1.8
    average_power_fraction: float = 0.75
    pue: float = 1.1
    usd_per_kwh: float = 0.0826
    facility_usd_per_w: float = 11.0
    facility_years: float = 15.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or value < 0:
                raise TapeoutError(f"field '{f.name}': must be a number >= 0, got {value!r}")
        if self.years <= 0 or self.facility_years <= 0:
            raise TapeoutError(f"field 'years': must be > 0, got {self.years!r}")
        if not 0 <= self.network_fraction < 1:
            raise TapeoutError(f"field 'network_fraction': must be in [0, 1), got {self.network_fraction!r}")
        if not 0 < self.average_power_fraction <= 1:
            raise TapeoutError(
                f"field 'average_power_fraction': must be in (0, 1], got {self.average_power_fraction!r}"
            )
        if self.pue < 1:
            raise TapeoutError(f"field 'pue': must be >= 1, got {self.pue!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tco:
    """One chip's cost over the depreciation period, in US dollars."""

    chip_usd: float
    server_usd: float
    network_usd: float
    facility_usd: float
    energy_usd: float
    years: float
    average_power_w: float  # at the wall, PUE included

    @property
    def capital_usd(self) -> float:
        return self.chip_usd + self.server_usd + self.network_usd + self.facility_usd

    @property
    def total_usd(self) -> float:
        return self.capital_usd + self.energy_usd

    @property
    def usd_per_hour(self) -> float:
        return float(per_hour(self.total_usd, self.years))

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "capital_usd": self.capital_usd, "total_usd": self.total_usd,
                "usd_per_hour": self.usd_per_hour}  # fmt: skip


def chip_tco(price_usd: float, tdp_w: float, assumptions: TcoAssumptions | None = None) -> Tco:
    """The TCO of one chip bought at `price_usd` (levy included) with a `tdp_w` power rating.

    >>> t = chip_tco(30_000, 700)
    >>> round(t.network_usd / (t.chip_usd + t.server_usd + t.network_usd), 2)
    0.19
    >>> round(t.usd_per_hour, 2)
    1.15
    """
    a = assumptions or TcoAssumptions()
    if price_usd <= 0:
        raise TapeoutError(f"field 'price_usd': must be > 0, got {price_usd!r} (unit: US dollars)")
    if tdp_w <= 0:
        raise TapeoutError(f"field 'tdp_w': must be > 0, got {tdp_w!r} (unit: W)")
    return Tco(**{k: float(v) for k, v in tco_parts(price_usd, tdp_w, a).items()})


def tco_parts(price_usd: Num, tdp_w: Num, a: TcoAssumptions) -> dict[str, Num]:
    """The fields of `Tco`, for numbers or arrays (one per design; checked by the caller)."""
    it_power_w = tdp_w * a.server_power_factor
    hardware = price_usd + a.server_usd_per_chip
    network = hardware * a.network_fraction / (1 - a.network_fraction)
    facility = it_power_w * a.facility_usd_per_w * min(1.0, a.years / a.facility_years)
    wall_w = it_power_w * a.average_power_fraction * a.pue
    energy = wall_w / 1000 * a.years * HOURS_PER_YEAR * a.usd_per_kwh
    return {"chip_usd": price_usd, "server_usd": a.server_usd_per_chip, "network_usd": network,
            "facility_usd": facility, "energy_usd": energy, "years": a.years, "average_power_w": wall_w}  # fmt: skip


def usd_per_hour(parts: Mapping[str, Num]) -> Num:
    """`Tco.usd_per_hour` of its fields (numbers or arrays): capital and energy over the years."""
    capital = parts["chip_usd"] + parts["server_usd"] + parts["network_usd"] + parts["facility_usd"]
    return per_hour(capital + parts["energy_usd"], float(parts["years"]))


def per_hour(total_usd: Num, years: float) -> Num:
    """US dollars per hour of `total_usd` spread over `years`."""
    return total_usd / (years * HOURS_PER_YEAR)


def usd_per_unit(tco: Tco, units_per_s: float, per: float = 1.0) -> float:
    """Dollars per `per` units of work for a chip that does `units_per_s` (tokens, samples).

    >>> round(usd_per_unit(chip_tco(30_000, 700), 1000.0, per=1e6), 3)
    0.319
    """
    return hourly_usd_per_unit(tco.usd_per_hour, units_per_s, per)


def hourly_usd_per_unit(usd_per_hour: float, units_per_s: float, per: float = 1.0) -> float:
    """Dollars per `per` units of work for a chip that costs `usd_per_hour` and does
    `units_per_s` (`usd_per_unit` from the hourly cost alone)."""
    if units_per_s <= 0:
        raise TapeoutError(f"throughput must be > 0 to price a unit of work, got {units_per_s!r}")
    return usd_per_hour / (units_per_s * 3600) * per
