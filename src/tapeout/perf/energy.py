"""Energy of a matrix FLOP from sourced physical figures, and the clock a power budget sustains.

A FLOP pays, in `energy.yaml`'s figures (each with its source):

- the datapath: one multiply at the operand format and one fp32 (int32 for int8) accumulate per
  multiply-accumulate, from Horowitz's 45 nm table, scaled to the chip's node;
- operand delivery at the reuse the matrix unit achieves: a `rows x cols` unit reads `rows +
  cols` operands per `rows x cols` MACs from its local SRAM (register file or operand buffers),
  and reads and writes its fp32 accumulator once per dot product of depth k (`rows` for an array,
  32 bytes of operands for a dot-product unit); those bytes also cross half a core on wires. A
  dot-product unit's accumulators are charged at the capacity of the store that holds them (the
  register file of a GPU partition; Blackwell's tensor memory, which serves only the Tensor Core
  and so crosses no core wire), SRAM energy growing as the square root of capacity;
- the core's share of shared-SRAM traffic: a core that holds a T x T fp32 output tile in its
  local SRAM reads `w / T` bytes per FLOP from a shared SRAM slice half a die away;
- the clock tree and pipeline registers, a share of all of the above.

DRAM bytes are charged by the chip's memory type. Idle power and the power cap follow
`perf.power`: power above an idle share of TDP goes as the cube of the clock.

>>> from tapeout.hardware import get_chip
>>> round(sustained_clock(get_chip("h100-sxm"), "bf16"), 2)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_args

import numpy as np

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError
from tapeout.hardware.spec import ChipSpec, MatrixUnit, MemoryType, ProcessNode
from tapeout.perf.calibration import table
from tapeout.perf.power import power_capped
from tapeout.precision import BYTES_PER_ELEMENT, FALLBACKS, PRECISIONS, at_least_16
from tapeout.units import Num

ENERGY_FILE = Path(__file__).parent / "energy.yaml"
SCHEMA = "tapeout-energy/1"
BASE_NODE = "45nm"  # the node of the operation and SRAM figures
ACCUMULATOR_BYTES = 8  # an fp32 accumulator read and written once per dot product
LOCAL_SRAM_KIB = 32  # the capacity of the `sram.local` figure
STORES = ("register_file", "tensor_memory")  # where a dot-product unit keeps its accumulators
PJ = 1e-12
# Google (TPU v5e, v5p, v6e) and AWS (Trainium2, Inferentia2) do not publish their nodes: chips
# launched from this year are taken as N5-class, earlier ones as N7 (their cohorts' nodes).
UNPUBLISHED_N5_FROM = 2023


@dataclass(frozen=True, slots=True, kw_only=True)
class AccumulatorStore:
    """The memory a family's dot-product units read and write their accumulators in: a register
    file (shared with the partition's other units, so the bytes cross the core) or a tensor memory
    beside the unit."""

    store: str  # one of STORES
    capacity_kib: float  # one partition's share


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyTable:
    """The figures of `energy.yaml`, checked: pJ at 45 nm for logic and SRAM, node scales
    relative to 45 nm, and node-independent wire and DRAM figures."""

    mac_pj: Mapping[str, float]  # one multiply-accumulate by operand format, 45 nm
    node_scale: Mapping[str, float]  # energy of the same operation, relative to 45 nm
    local_sram_pj_per_byte: float  # 45 nm
    shared_sram_pj_per_byte: float  # 45 nm
    sram_capacity_exponent: float  # SRAM access energy ~ capacity ** this
    accumulator_store: Mapping[str, AccumulatorStore]  # by chip family; others: local SRAM
    wire_pj_per_byte_mm: float
    clock_share: float  # of dynamic power
    dot_product_bytes: float  # operand bytes reduced per accumulator update, dot-product units
    reticle_mm2: float
    dram_pj_per_bit: Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlopEnergy:
    """Picojoules of one matrix FLOP, by where they are spent."""

    datapath: float  # multiply and accumulate
    operands: float  # local SRAM reads and writes feeding the matrix unit
    operand_wires: float  # those bytes crossing the core
    shared: float  # shared SRAM slice and the network to the core
    clock: float  # clock tree and pipeline registers

    @property
    def total(self) -> float:
        return self.datapath + self.operands + self.operand_wires + self.shared + self.clock


def flop_total(parts: Mapping[str, Num]) -> Num:
    """Picojoules of one FLOP: the sum of its parts (`FlopEnergy.total` over numbers or arrays)."""
    return parts["datapath"] + parts["operands"] + parts["operand_wires"] + parts["shared"] + parts["clock"]


# ---- reading and checking energy.yaml ------------------------------------------------------
def _mapping(value: Any, origin: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TapeoutError(f"{origin}: field '{field}': expected a mapping, got {value!r}")
    return value


def _figure(entry: Any, origin: str, field: str, unit: str, below_one: bool = False) -> float:
    """The value of one sourced figure, refused unless it is a positive finite number in `unit`
    with a source and a note."""
    data = _mapping(entry, origin, field)
    value, given = data.get("value"), data.get("unit")
    if given != unit:
        raise TapeoutError(f"{origin}: field '{field}.unit': {given!r}, expected {unit!r}")
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number <= 0 or (below_one and number >= 1):
        bound = "a positive number below 1" if below_one else "a positive, finite number"
        raise TapeoutError(f"{origin}: field '{field}.value': {value!r} {unit} is not {bound}")
    for key in ("source", "note"):
        text = data.get(key)
        if not isinstance(text, str) or not text.strip():
            raise TapeoutError(
                f"{origin}: field '{field}.{key}': every figure needs a {key}; got {text!r} "
                f"for {value!r} {unit}"
            )
    return float(number)


def _keyed(section: Mapping[str, Any], known: tuple[str, ...], origin: str, field: str) -> None:
    """Every key known, and every known key given."""
    unknown = sorted(set(section) - set(known))
    missing = [k for k in known if k not in section]
    if unknown or missing:
        raise TapeoutError(
            f"{origin}: field '{field}': unknown {unknown or 'none'}, missing {missing or 'none'}; "
            f"expected {', '.join(known)}"
        )


def _macs(data: Mapping[str, Any], origin: str) -> dict[str, float]:
    ops = _mapping(data.get("operations"), origin, "operations")
    op_pj = {name: _figure(e, origin, f"operations.{name}", "pJ") for name, e in ops.items()}
    macs = _mapping(data.get("macs"), origin, "macs")
    _keyed(macs, PRECISIONS, origin, "macs")
    out: dict[str, float] = {}
    for precision, parts in macs.items():
        if not isinstance(parts, list) or not parts or any(p not in op_pj for p in parts):
            raise TapeoutError(
                f"{origin}: field 'macs.{precision}': {parts!r} is not a list of operations; "
                f"known: {', '.join(op_pj)}"
            )
        out[precision] = sum(op_pj[p] for p in parts)
    return out


def _node_scale(section: Mapping[str, Any], origin: str) -> dict[str, float]:
    """Each node relative to 45 nm, following `relative_to` chains."""
    nodes: tuple[str, ...] = get_args(ProcessNode)
    _keyed(section, nodes, origin, "node_energy")
    scale: dict[str, float] = {BASE_NODE: 1.0}

    def resolve(node: str, seen: tuple[str, ...]) -> float:
        if node in scale:
            return scale[node]
        entry = _mapping(section[node], origin, f"node_energy.{node}")
        ref = entry.get("relative_to", BASE_NODE)
        if ref != BASE_NODE and (ref not in section or ref in seen):
            raise TapeoutError(
                f"{origin}: field 'node_energy.{node}.relative_to': {ref!r} is not another node "
                f"of the table (or refers back to {node})"
            )
        unit = f"x {ref}"
        scale[node] = _figure(entry, origin, f"node_energy.{node}", unit) * resolve(ref, (*seen, node))
        return scale[node]

    return {node: resolve(node, ()) for node in nodes}


def _accumulator_stores(section: Mapping[str, Any], origin: str) -> dict[str, AccumulatorStore]:
    out: dict[str, AccumulatorStore] = {}
    for family, entry in section.items():
        field = f"accumulator_store.{family}"
        store = _mapping(entry, origin, field).get("store")
        if store not in STORES:
            raise TapeoutError(f"{origin}: field '{field}.store': {store!r}; known: {', '.join(STORES)}")
        out[family] = AccumulatorStore(store=store, capacity_kib=_figure(entry, origin, field, "KiB"))
    return out


def parse_energy(data: Any, origin: str) -> EnergyTable:
    """An `EnergyTable` from the loaded contents of an energy file; bad entries raise a
    TapeoutError naming the field, the value and the unit."""
    top = _mapping(data, origin, "(top level)")
    if top.get("schema") != SCHEMA:
        raise TapeoutError(f"{origin}: field 'schema': {top.get('schema')!r}, expected {SCHEMA!r}")
    sram = _mapping(top.get("sram"), origin, "sram")
    dram = _mapping(top.get("dram_pj_per_bit"), origin, "dram_pj_per_bit")
    _keyed(dram, get_args(MemoryType), origin, "dram_pj_per_bit")
    return EnergyTable(
        mac_pj=_macs(top, origin),
        node_scale=_node_scale(_mapping(top.get("node_energy"), origin, "node_energy"), origin),
        local_sram_pj_per_byte=_figure(sram.get("local"), origin, "sram.local", "pJ/B"),
        shared_sram_pj_per_byte=_figure(sram.get("shared"), origin, "sram.shared", "pJ/B"),
        sram_capacity_exponent=_figure(
            top.get("sram_capacity_exponent"), origin, "sram_capacity_exponent", "exponent", below_one=True
        ),
        accumulator_store=_accumulator_stores(
            _mapping(top.get("accumulator_store"), origin, "accumulator_store"), origin
        ),
        wire_pj_per_byte_mm=8 * _figure(top.get("wire"), origin, "wire", "pJ/bit/mm"),
        clock_share=_figure(top.get("clock_share"), origin, "clock_share", "fraction", below_one=True),
        dot_product_bytes=_figure(top.get("dot_product_bytes"), origin, "dot_product_bytes", "B"),
        reticle_mm2=_figure(top.get("reticle_mm2"), origin, "reticle_mm2", "mm^2"),
        dram_pj_per_bit={t: _figure(e, origin, f"dram_pj_per_bit.{t}", "pJ/bit") for t, e in dram.items()},
    )


def load_energy(path: Path) -> EnergyTable:
    """Read and check an energy file (the shipped one is `ENERGY_FILE`)."""
    return parse_energy(load_data_file(path), str(path))


@cache
def energy_table() -> EnergyTable:
    """The shipped figures, read once."""
    return load_energy(ENERGY_FILE)


# ---- the model -----------------------------------------------------------------------------
def runs_as(chip: ChipSpec, precision: str) -> str:
    """The format whose energy a FLOP at `precision` is charged: the next wider one the chip's
    matrix units have, else (fp32 on a chip with only 16- and 8-bit matrix units: optimizer and
    vector work) the widest they have."""
    for p in FALLBACKS.get(precision, (precision,)):
        if getattr(chip.peak_tflops, p) is not None:
            return p
    held = [p for p in PRECISIONS if getattr(chip.peak_tflops, p, None) is not None]
    if not held:
        raise TapeoutError(f"{chip.id}: field 'peak_tflops': no matrix peak in any format")
    return max(held, key=lambda p: BYTES_PER_ELEMENT[p])


def node_of(chip: ChipSpec) -> str:
    """The chip's process node; for a chip whose node is not published, the node its launch-year
    cohort was built on (N7 through 2022, N5 from `UNPUBLISHED_N5_FROM`)."""
    if chip.process_node is not None:
        return chip.process_node
    return "N7" if chip.launch_year < UNPUBLISHED_N5_FROM else "N5"


def node_scale(chip: ChipSpec, energy: EnergyTable | None = None) -> float:
    """Energy of a logic or SRAM operation on the chip's node, relative to 45 nm."""
    node = node_of(chip)
    table_ = energy or energy_table()
    if node not in table_.node_scale:
        raise TapeoutError(f"{chip.id}: field 'process_node': {node!r} has no energy figure; known: "
                           f"{', '.join(sorted(table_.node_scale))}")  # fmt: skip
    return table_.node_scale[node]


def _matrix_unit(chip: ChipSpec) -> MatrixUnit:
    """The chip's matrix unit; one that lists none is taken as a 16 x 16 dot-product unit (a tensor
    core's shape: operands from the registers, the least reuse in the catalog)."""
    return chip.matrix_unit or MatrixUnit(rows=16, cols=16, per_core=1, style="dot_product")


@dataclass(frozen=True, slots=True, kw_only=True)
class FlopInputs:
    """What the FLOP energy model reads of a chip for one format: numbers for one chip
    (`flop_inputs`), or arrays with one entry per design for designs that share their node,
    formats, family and matrix-unit style (the explorer's batch path)."""

    fmt: str  # the format the FLOP is charged as (`runs_as`)
    scale: float  # the node's energy relative to 45 nm (`node_scale`)
    rows: Num  # the matrix unit's shape
    cols: Num
    array: bool  # an array-style matrix unit (`MatrixUnit.style`)
    local_bytes: Num  # core-local SRAM per core (only shared SRAM: its share per core)
    core_mm: Num  # half the side of a core's share of silicon
    die_mm: Num  # half the side of a die
    accumulator_pj: float  # SRAM pJ per byte at 45 nm of the accumulators' store
    accumulator_on_core: bool  # the accumulators' bytes cross the core (not in tensor memory)


def distances_mm(die_mm2: Num, dies_per_package: int, cores: Num) -> tuple[Num, Num]:
    """(Half the side of a core's share of silicon, half the side of a die), in mm."""
    core = die_mm2 * dies_per_package / cores
    return np.sqrt(core) / 2, np.sqrt(die_mm2) / 2


def accumulator_store(chip: ChipSpec, e: EnergyTable) -> tuple[float, bool]:
    """(SRAM pJ per byte at 45 nm, whether its bytes cross the core) of the matrix unit's
    accumulators: the store its family keeps them in (a dot-product unit), else the local SRAM
    half a core away."""
    held = e.accumulator_store.get(chip.family)
    if held is None or _matrix_unit(chip).style == "array":
        return e.local_sram_pj_per_byte, True
    size = (held.capacity_kib / LOCAL_SRAM_KIB) ** e.sram_capacity_exponent
    return e.local_sram_pj_per_byte * size, held.store != "tensor_memory"


def flop_inputs(chip: ChipSpec, precision: str, energy: EnergyTable | None = None) -> FlopInputs:
    """What `flop_energy` reads of `chip` at `precision`."""
    e = energy or energy_table()
    mu = _matrix_unit(chip)
    local = chip.sram_per_core_bytes or chip.sram_shared_bytes / chip.num_cores
    if local <= 0:
        raise TapeoutError(f"{chip.id}: field 'sram': no on-chip SRAM listed; operand reuse needs it")
    core_mm, die_mm = distances_mm(chip.die_area_mm2 or e.reticle_mm2, chip.dies_per_package, chip.num_cores)
    acc_pj, acc_on_core = accumulator_store(chip, e)
    return FlopInputs(
        fmt=runs_as(chip, precision), scale=node_scale(chip, e), rows=mu.rows, cols=mu.cols,
        array=mu.style == "array", local_bytes=local, core_mm=core_mm, die_mm=die_mm,
        accumulator_pj=acc_pj, accumulator_on_core=acc_on_core,
    )  # fmt: skip


def flop_parts(x: FlopInputs, energy: EnergyTable | None = None) -> dict[str, Num]:
    """Picojoules of one dense matrix FLOP by part (the fields of `FlopEnergy`; module docstring),
    for numbers or arrays. The largest square fp32 output tile the core-local SRAM holds, of side
    sqrt(bytes / 4), sets how often a shared-SRAM operand is read again."""
    e = energy or energy_table()
    width = BYTES_PER_ELEMENT[x.fmt]
    depth = x.rows if x.array else e.dot_product_bytes / width
    operand_bytes = width / 2 * (1 / x.rows + 1 / x.cols)
    acc_bytes = ACCUMULATOR_BYTES / (2 * depth)
    shared_bytes = width / np.sqrt(x.local_bytes / 4)
    acc_pj, acc_mm = x.accumulator_pj, (x.core_mm if x.accumulator_on_core else 0.0)
    parts = {
        "datapath": e.mac_pj[x.fmt] / 2 * x.scale,
        "operands": (operand_bytes * e.local_sram_pj_per_byte + acc_bytes * acc_pj) * x.scale,
        "operand_wires": (operand_bytes * x.core_mm + acc_bytes * acc_mm) * e.wire_pj_per_byte_mm,
        "shared": shared_bytes * (e.shared_sram_pj_per_byte * x.scale + e.wire_pj_per_byte_mm * x.die_mm),
    }
    work = parts["datapath"] + parts["operands"] + parts["operand_wires"] + parts["shared"]
    parts["clock"] = work * e.clock_share / (1 - e.clock_share)
    return parts


def flop_energy(chip: ChipSpec, precision: str, energy: EnergyTable | None = None) -> FlopEnergy:
    """Picojoules of one dense matrix FLOP at `precision` on `chip`, by part (module docstring).

    >>> from tapeout.hardware import get_chip
    >>> e = flop_energy(get_chip("a100-sxm-80gb"), "bf16")
    >>> round(e.datapath, 3)  # (1.1 + 0.9) pJ / 2 FLOP x 0.124 (N7)
    0.124
    """
    e = energy or energy_table()
    return FlopEnergy(**{k: float(v) for k, v in flop_parts(flop_inputs(chip, precision, e), e).items()})


def flop_pj(chip: ChipSpec, precision: str) -> float:
    """Picojoules of one dense matrix FLOP at `precision`: datapath and operand delivery.

    >>> from tapeout.hardware import get_chip
    >>> flop_pj(get_chip("h100-sxm"), "fp8") < flop_pj(get_chip("h100-sxm"), "bf16")
    True
    """
    return flop_energy(chip, precision).total


def sram_pj_per_byte(chip: ChipSpec) -> float:
    """Picojoules of one byte read or written in the core-local SRAM that feeds the matrix
    units (a 32 KB-class bank), on the chip's node."""
    return energy_table().local_sram_pj_per_byte * node_scale(chip)


def dram_pj_per_byte(chip: ChipSpec) -> float:
    """Picojoules of one DRAM byte read or written, from the chip's memory type."""
    return 8 * energy_table().dram_pj_per_bit[chip.memory.type]


def gemm_dram_bytes(m: int, n: int, k: int, precision: str) -> float:
    """DRAM bytes of an m x n x k GEMM whose operands are read once and output written once (the
    output in 16 bits or wider): the least traffic such a GEMM makes.

    >>> gemm_dram_bytes(2, 3, 4, "bf16")
    52.0
    """
    if precision not in PRECISIONS:
        raise TapeoutError(f"field 'precision': {precision!r}; known: {', '.join(PRECISIONS)}")
    out = at_least_16(precision)
    return float((m * k + k * n) * BYTES_PER_ELEMENT[precision] + m * n * BYTES_PER_ELEMENT[out])


def idle_watts(chip: ChipSpec) -> float:
    """What the chip draws busy with nothing: the calibration's idle share of its TDP."""
    return chip.tdp_w * table().for_family(chip.family).idle_power_fraction


def power_watts(chip: ChipSpec, precision: str, flop_per_s: float, dram_bytes_per_s: float = 0.0) -> float:
    """Watts drawn running matrix FLOPs at `flop_per_s` and DRAM traffic at `dram_bytes_per_s`,
    idle power included, at nominal clocks."""
    dynamic = flop_per_s * flop_pj(chip, precision) + dram_bytes_per_s * dram_pj_per_byte(chip)
    return dynamic * PJ + idle_watts(chip)


def full_load_watts(chip: ChipSpec) -> tuple[float, float]:
    """(Matrix units at their dense bf16 peak, DRAM at full bandwidth) in watts, nominal clocks."""
    return (
        chip.peak_flops("bf16") * flop_pj(chip, "bf16") * PJ,
        chip.memory_bandwidth * dram_pj_per_byte(chip) * PJ,
    )


def sustained_clock(chip: ChipSpec, precision: str, dram_bytes_per_flop: float = 0.0) -> float:
    """Fraction of its clock the chip sustains within its TDP under a dense GEMM at its peak
    (with `dram_bytes_per_flop` of DRAM traffic), by `perf.power.power_capped`'s rule."""
    if dram_bytes_per_flop < 0 or not math.isfinite(dram_bytes_per_flop):
        raise TapeoutError(f"dram_bytes_per_flop: {dram_bytes_per_flop!r} B/FLOP is not a finite number >= 0")
    per_flop = flop_pj(chip, precision) + dram_bytes_per_flop * dram_pj_per_byte(chip)
    draw_w = chip.peak_flops(precision) * per_flop * PJ
    idle = table().for_family(chip.family).idle_power_fraction
    return 1.0 / power_capped(chip.tdp_w, idle, 1.0, draw_w)


__all__ = [
    "ENERGY_FILE",
    "AccumulatorStore",
    "EnergyTable",
    "FlopEnergy",
    "dram_pj_per_byte",
    "energy_table",
    "flop_energy",
    "flop_pj",
    "full_load_watts",
    "gemm_dram_bytes",
    "idle_watts",
    "load_energy",
    "node_scale",
    "parse_energy",
    "power_watts",
    "runs_as",
    "sram_pj_per_byte",
    "sustained_clock",
]
