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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from tapeout.cost.silicon import AreaConstants, NodeCost, Silicon, silicon
from tapeout.errors import TapeoutError
from tapeout.hardware.design import DRAM_CHANNEL_GB_S, HBM_STACK_GB_S
from tapeout.hardware.spec import ChipSpec, DieSpec
from tapeout.units import Num


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
        return float(total_area({name: getattr(self, name) for name in _AREA_BLOCKS}))

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items()}


_AREA_BLOCKS = tuple(f.name for f in fields(Area))


def total_area(blocks: Mapping[str, Num]) -> Num:
    """The die's mm^2: the sum of its blocks."""
    return sum((blocks[name] for name in _AREA_BLOCKS), 0.0)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class DieInputs:
    """What the area model reads of a die: numbers for one chip (`die_inputs`), or arrays with
    one entry per design for many designs that share their node, memory kind and SRAM styles
    (the explorer's batch path)."""

    node: NodeCost
    macs: Num  # bf16 MACs of the die's matrix cores
    array_style: bool  # the matrix units bring their own staging (`MatrixUnit.style`)
    cores: Num  # matrix cores and vector-only cores
    lanes: Num  # FP32 vector lanes of the die
    core_sram_mib: Num  # core-local SRAM of the matrix cores, all of them
    core_style: str
    vector_sram_mib: Num  # local memory of the vector-only cores
    chip_sram_mib: Num
    chip_style: str
    interfaces: Num  # HBM sites or 32-bit DRAM channels
    hbm: bool
    link_gb_s: Num  # chip-to-chip SerDes, and the NIC's when it is on the die
    dies_per_package: int


def die_inputs(chip: ChipSpec, s: Silicon) -> DieInputs:
    """What the area model reads of `chip`."""
    die = die_of(chip)
    mu = chip.matrix_unit
    macs_per_core = mu.macs if mu else chip.peak_flops("bf16") / (2 * chip.clock_ghz * 1e9 * chip.num_cores)
    vec = die.vector_cores
    core_kib = die.core_sram_kib
    if core_kib is None:
        core_kib = sum(lv.capacity_kib or 0.0 for lv in chip.sram if lv.scope == "core")
    link_gb_s = die_links_gb_s(chip, chip.scale_up.bandwidth_per_direction_gb_s if chip.scale_up else 0.0)
    return DieInputs(
        node=s.node(chip.process_node, chip.id), macs=die.cores * macs_per_core,
        array_style=bool(mu and mu.style == "array"), cores=die.cores + (vec.count if vec else 0),
        lanes=die.cores * fp32_lanes_per_core(chip, die) + (vec.count * vec.fp32_lanes_per_core if vec else 0),
        core_sram_mib=die.cores * core_kib / 1024, core_style=sram_style(chip, "core"),
        vector_sram_mib=vec.count * (vec.local_sram_kib or 0.0) / 1024 if vec else 0.0,
        chip_sram_mib=die.shared_sram_mib, chip_style=sram_style(chip, "chip"),
        interfaces=die.memory_interfaces, hbm=chip.memory.type in HBM_STACK_GB_S, link_gb_s=link_gb_s,
        dies_per_package=chip.dies_per_package,
    )  # fmt: skip


def die_links_gb_s(chip: ChipSpec, scale_up_gb_s: Num) -> Num:
    """GB/s of SerDes on the die: the scale-up link's, and the NIC's when it is on the die."""
    on_die = chip.scale_out is not None and chip.node.nics_per_chip == 0
    return scale_up_gb_s + (chip.scale_out.gbit_s_per_chip / 8 if on_die and chip.scale_out else 0.0)


def sram_style(chip: ChipSpec, scope: str) -> str:
    """The style of the chip's first SRAM level of `scope` ("cache" when it lists none)."""
    return next((lv.style for lv in chip.sram if lv.scope == scope), "cache")


def _parts(x: DieInputs, s: Silicon) -> tuple[dict[str, Num], Num, Num]:
    """Blocks known without the fitted constants, and the two fitted terms' multipliers:
    (blocks in mm^2 per package, cores x logic scale, array-style MACs x logic scale)."""
    a: AreaConstants = s.area
    node = x.node
    logic = s.nodes["N7"].logic_mtr_per_mm2 / node.logic_mtr_per_mm2  # mm^2 at this node per N7 mm^2

    def sram_mm2(mib: Num, style: str) -> Num:
        per_mm2 = a.scratchpad_mib_per_mm2_n7 if style == "scratchpad" else a.cache_mib_per_mm2_n7
        return mib / per_mm2 * node.sram_scale

    phy, ctrl = (a.hbm_phy_mm2, a.hbm_controller_mtr) if x.hbm else (a.dram_phy_mm2, a.dram_controller_mtr)
    blocks = {
        "matrix_units": x.macs * a.mac_mm2_n7 * logic,
        "vector_lanes": x.lanes * a.fp32_lane_mtr / node.logic_mtr_per_mm2,
        "sram": sram_mm2(x.core_sram_mib, x.core_style) + sram_mm2(x.vector_sram_mib, "scratchpad")
                + sram_mm2(x.chip_sram_mib, x.chip_style),
        "memory_phy": x.interfaces * phy,
        "memory_controllers": x.interfaces * ctrl / node.logic_mtr_per_mm2,
        "links": x.link_gb_s * (node.serdes_mm2_per_gb_s + a.serdes_controller_mtr_per_gb_s / node.logic_mtr_per_mm2),
        "host_io": a.pcie_lanes * (node.pcie_lane_mm2 + a.pcie_controller_mtr_per_lane / node.logic_mtr_per_mm2),
        "noc": x.cores * a.noc_mtr_per_core / node.logic_mtr_per_mm2,
    }  # fmt: skip
    array_macs = x.macs if x.array_style else 0.0
    return blocks, x.cores * logic, array_macs * logic


def area_blocks(x: DieInputs, s: Silicon) -> dict[str, Num]:
    """mm^2 of one compute die by block (the fields of `Area`), for numbers or arrays."""
    blocks, cores, array_macs = _parts(x, s)
    blocks["matrix_units"] = blocks["matrix_units"] + array_macs * s.area.array_feed_mm2_n7
    blocks["cores"] = cores * s.area.core_mm2_n7
    n = x.dies_per_package
    subtotal = sum(blocks.values()) / n
    other = subtotal * s.area.other_fraction / (1 - s.area.other_fraction)
    return {**{k: v / n for k, v in blocks.items()}, "other": other}


def die_area(chip: ChipSpec, data: Silicon | None = None) -> Area:
    """The modelled area of one compute die of `chip`, by block.

    >>> from tapeout.hardware import get_chip
    >>> 700 < die_area(get_chip("a100-sxm-80gb")).total < 950
    True
    """
    s = data or silicon()
    return Area(**{k: float(v) for k, v in area_blocks(die_inputs(chip, s), s).items()})


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
        blocks, cores, array_macs = _parts(die_inputs(chip, s), s)
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
