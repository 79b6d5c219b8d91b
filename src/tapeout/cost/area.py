"""Die area from the architecture.

A die is the sum of its blocks, each sized from what the chip has rather than from its
published area (`silicon.yaml` gives every constant and its source):

- matrix units: an area per bf16 MAC (TPU v4i's MXUs); a unit of `array` style also brings
  its operand and accumulator staging, an area per MAC fitted on the published dies;
- cores: an area per core (schedulers, register files, scalar and load/store units) fitted on
  the published dies; vector-only cores (Gaudi's TPCs) count as cores;
- vector lanes: one FP32 FMA unit per lane;
- SRAM by style: a scratchpad at TPU v4i's CMEM density, a cache at GA100's L2 density;
- memory interfaces: a fixed-size PHY per HBM site or 32-bit DRAM channel, and a controller
  whose transistors shrink with the node;
- links: SerDes PHY per GB/s (NVLink3 at 7 nm, NVLink4 at 5 nm and below) plus controllers;
  a PCIe x16 host port; an on-die NIC when the chip has no separate one;
- the on-chip network per core, and a share for control, clocks and test.

Logic blocks and the fitted areas are at N7 and scale by logic density to the chip's node.
The whole die counts, enabled or not (`die` in the catalog: spare SMs, fused-off L2 and HBM
sites, SRAM the product does not expose). Packages of several compute dies split the blocks
evenly across them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from tapeout.cost.silicon import AreaConstants, Silicon, silicon
from tapeout.errors import TapeoutError
from tapeout.hardware.design import DRAM_CHANNEL_GB_S, HBM_STACK_GB_S
from tapeout.hardware.spec import ChipSpec, DieSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Area:
    """mm^2 per die, by block."""

    matrix_units: float
    cores: float
    vector_lanes: float
    sram: float
    memory_phy: float
    memory_controllers: float
    links: float
    host_io: float
    noc: float
    other: float

    @property
    def total(self) -> float:
        return float(sum(getattr(self, name) for name in _AREA_BLOCKS))

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items()}


_AREA_BLOCKS = tuple(f.name for f in fields(Area))


def die_of(chip: ChipSpec) -> DieSpec:
    """The physical die: the catalog's `die` section, or the enabled part when there is none."""
    if chip.die is not None:
        return chip.die
    return DieSpec(
        cores=chip.num_cores,
        shared_sram_mib=chip.sram_shared_bytes / 2**20,
        memory_interfaces=memory_interfaces(chip),
    )


def memory_interfaces(chip: ChipSpec) -> int:
    """HBM sites (the stacks, or bandwidth / a stack's) or 32-bit DRAM channels; at least one,
    however low the bandwidth."""
    mem = chip.memory
    if mem.type in HBM_STACK_GB_S:
        return mem.stacks or max(1, math.ceil(mem.bandwidth_gb_s / HBM_STACK_GB_S[mem.type] - 0.05))
    return max(1, math.ceil(mem.bandwidth_gb_s / DRAM_CHANNEL_GB_S[mem.type] - 0.05))


def fp32_lanes_per_core(chip: ChipSpec, die: DieSpec) -> float:
    """The die's figure, or the vector FP32 peak spread over the enabled cores at the clock."""
    if die.fp32_lanes_per_core is not None:
        return die.fp32_lanes_per_core
    return chip.vector_flops / (2 * chip.clock_ghz * 1e9 * chip.num_cores)


def _parts(chip: ChipSpec, s: Silicon) -> tuple[dict[str, float], float, float]:
    """Blocks known without the fitted constants, and the two fitted terms' multipliers:
    (blocks in mm^2 per package, cores x logic scale, array-style MACs x logic scale)."""
    node = s.node(chip.process_node, chip.id)
    a: AreaConstants = s.area
    logic = s.nodes["N7"].logic_mtr_per_mm2 / node.logic_mtr_per_mm2  # mm^2 at this node per N7 mm^2
    die = die_of(chip)
    mu = chip.matrix_unit
    macs_per_core = mu.macs if mu else chip.peak_flops("bf16") / (2 * chip.clock_ghz * 1e9 * chip.num_cores)
    macs = die.cores * macs_per_core
    vec = die.vector_cores
    cores = die.cores + (vec.count if vec else 0)
    lanes = die.cores * fp32_lanes_per_core(chip, die) + (vec.count * vec.fp32_lanes_per_core if vec else 0)
    core_kib = die.core_sram_kib
    if core_kib is None:
        core_kib = sum(lv.capacity_kib or 0.0 for lv in chip.sram if lv.scope == "core")
    core_style = next((lv.style for lv in chip.sram if lv.scope == "core"), "cache")
    chip_style = next((lv.style for lv in chip.sram if lv.scope == "chip"), "cache")

    def sram_mm2(mib: float, style: str) -> float:
        per_mm2 = a.scratchpad_mib_per_mm2_n7 if style == "scratchpad" else a.cache_mib_per_mm2_n7
        return mib / per_mm2 * node.sram_scale

    vector_kib = vec.count * (vec.local_sram_kib or 0.0) if vec else 0.0  # software-managed local memory
    hbm = chip.memory.type in HBM_STACK_GB_S
    phy, ctrl = (a.hbm_phy_mm2, a.hbm_controller_mtr) if hbm else (a.dram_phy_mm2, a.dram_controller_mtr)
    link_gb_s = chip.scale_up.bandwidth_per_direction_gb_s if chip.scale_up else 0.0
    if chip.scale_out and chip.node.nics_per_chip == 0:  # the NIC is on the die
        link_gb_s += chip.scale_out.gbit_s_per_chip / 8
    blocks = {
        "matrix_units": macs * a.mac_mm2_n7 * logic,
        "vector_lanes": lanes * a.fp32_lane_mtr / node.logic_mtr_per_mm2,
        "sram": sram_mm2(die.cores * core_kib / 1024, core_style) + sram_mm2(vector_kib / 1024, "scratchpad")
                + sram_mm2(die.shared_sram_mib, chip_style),
        "memory_phy": die.memory_interfaces * phy,
        "memory_controllers": die.memory_interfaces * ctrl / node.logic_mtr_per_mm2,
        "links": link_gb_s * (node.serdes_mm2_per_gb_s + a.serdes_controller_mtr_per_gb_s / node.logic_mtr_per_mm2),
        "host_io": a.pcie_lanes * (node.pcie_lane_mm2 + a.pcie_controller_mtr_per_lane / node.logic_mtr_per_mm2),
        "noc": cores * a.noc_mtr_per_core / node.logic_mtr_per_mm2,
    }  # fmt: skip
    array_macs = macs if mu and mu.style == "array" else 0.0
    return blocks, cores * logic, array_macs * logic


def die_area(chip: ChipSpec, data: Silicon | None = None) -> Area:
    """The modelled area of one compute die of `chip`, by block.

    >>> from tapeout.hardware import get_chip
    >>> 700 < die_area(get_chip("a100-sxm-80gb")).total < 950
    True
    """
    s = data or silicon()
    blocks, cores, array_macs = _parts(chip, s)
    blocks["matrix_units"] += array_macs * s.area.array_feed_mm2_n7
    blocks["cores"] = cores * s.area.core_mm2_n7
    n = chip.dies_per_package
    subtotal = sum(blocks.values()) / n
    other = subtotal * s.area.other_fraction / (1 - s.area.other_fraction)
    return Area(**{k: v / n for k, v in blocks.items()}, other=other)


def published_dies(chips: list[ChipSpec]) -> list[ChipSpec]:
    """One catalog entry per distinct die with a published area (a cut-down part shares its
    full part's die)."""
    seen: dict[tuple[object, ...], ChipSpec] = {}
    for chip in chips:
        if chip.die_area_mm2 is None or chip.process_node is None:
            continue
        key = (chip.die_area_mm2, chip.process_node, chip.die, chip.family)
        seen.setdefault(key, chip)
    return list(seen.values())


def fit(chips: list[ChipSpec], data: Silicon | None = None) -> tuple[float, float]:
    """The per-core area and the per-MAC feed of array-style matrix units (mm^2 at N7) that
    best match the published die areas, least squares on the relative error.

    Each die gives one equation: (blocks + core x cores + feed x array MACs) / (1 - other) = area.
    """
    s = data or silicon()
    rows, rhs = [], []
    for chip in chips:
        assert chip.die_area_mm2 is not None
        blocks, cores, array_macs = _parts(chip, s)
        target = chip.die_area_mm2 * chip.dies_per_package * (1 - s.area.other_fraction)
        rows.append([cores / target, array_macs / target])
        rhs.append(1 - sum(blocks.values()) / target)
    if len(rows) < 2:
        raise TapeoutError("the area fit needs at least two dies with a published area")
    (core, feed), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return max(0.0, float(core)), max(0.0, float(feed))


def refit(chips: list[ChipSpec], data: Silicon | None = None) -> Silicon:
    """The silicon data with its fitted area constants replaced by the fit on `chips`."""
    s = data or silicon()
    core, feed = fit(chips, s)
    area = s.area.model_copy(update={"core_mm2_n7": core, "array_feed_mm2_n7": feed})
    return s.model_copy(update={"area": area})


def held_out(chips: list[ChipSpec], data: Silicon | None = None) -> dict[str, float]:
    """Leave-one-out relative error of each published die: fitted without it, then predicted."""
    out: dict[str, float] = {}
    for chip in chips:
        assert chip.die_area_mm2 is not None
        others = refit([c for c in chips if c is not chip], data)
        out[chip.id] = die_area(chip, others).total / chip.die_area_mm2 - 1
    return out
