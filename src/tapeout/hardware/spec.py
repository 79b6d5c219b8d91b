"""Frozen hardware specs: chip, memory, SRAM, links, node, cluster.

One schema: a catalog YAML file, an inline mapping in a validation case and the Python API all
build these same objects. Field names carry their unit; derived quantities are properties.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, model_validator

import tapeout.units as units
from tapeout.errors import TapeoutError
from tapeout.frozen import Frozen
from tapeout.precision import FALLBACKS, narrow

# A spec number is a quantity in the unit its name carries (GB/s, TFLOP/s, W, mm^2, cores...): no
# chip has one below a millionth or above a billion of its unit, and past those times and rates
# vanish to zero or overflow to infinity in floating point.
SPEC_MIN, SPEC_MAX = 1e-6, 1_000_000_000
PosFloat = Annotated[float, Field(ge=SPEC_MIN, le=SPEC_MAX)]
PosInt = Annotated[int, Field(gt=0, le=SPEC_MAX)]
NonNegFloat = Annotated[float, Field(ge=0, le=SPEC_MAX)]

MemoryType = Literal["HBM2", "HBM2e", "HBM3", "HBM3e", "GDDR6", "GDDR7", "LPDDR5", "LPDDR5X", "DDR5"]
Topology = Literal["switch", "full_mesh", "torus_2d", "torus_3d", "ring", "pcie"]
ProcessNode = Literal["N16", "N12", "N7", "N6", "N5", "N4", "N4P", "N3"]

# Transistors per mm^2 of logic by process node (CSET "AI Chips" figures as used by ttm-cas and
# LLMCompass; research/hardware_cost.md section 2.1). N4 and N3 use N5 and TSMC's 1.6x claim;
# N4P is N5 plus the 6 % density TSMC announced for it (TSMC newsroom, 2021-10-26).
LOGIC_MTR_PER_MM2: dict[str, float] = {
    "N16": 28.9, "N12": 28.9, "N7": 96.3, "N6": 114.2, "N5": 138.2, "N4": 138.2, "N4P": 146.5, "N3": 221.0,
}  # fmt: skip
# A bf16 multiply-accumulate needs at least ~3,000 transistors: an 8x8-bit mantissa array of 64
# full adders at 28 transistors each (~1,800) plus alignment and a 24-bit accumulator adder.
# Used only as a lower bound to reject matrix units no die could hold.
MIN_TRANSISTORS_PER_BF16_MAC = 3000


class MatrixUnit(Frozen):
    """A rows x cols array of bf16 multiply-accumulators (a systolic array or the equivalent
    MACs per cycle of a tensor core); `per_core` of them in each core.

    `style` says what feeds the MACs, which sets their area (cost/area.py): `dot_product`
    units read their operands each cycle from the core's registers and local memory, which the
    core already has (GPU tensor cores, MTIA's dot-product engines); an `array` brings its own
    operand and accumulator buffers, fed by DMA from a vector memory (TPU MXUs, Trainium's
    TensorE, Gaudi's MMEs)."""

    rows: PosInt
    cols: PosInt
    per_core: PosInt
    style: Literal["dot_product", "array"] = "dot_product"

    @property
    def macs(self) -> int:
        return self.rows * self.cols * self.per_core


class SramLevel(Frozen):
    """One level of on-chip SRAM: per core (`capacity_kib` each) or shared (`capacity_mib`)."""

    name: str
    scope: Literal["core", "chip"]
    capacity_kib: PosFloat | None = None
    capacity_mib: PosFloat | None = None
    # A software-managed scratchpad packs bits densely; a hardware cache adds tags, ECC,
    # crossbars and slicing and holds about a third as much per mm^2 (cost/area.py).
    style: Literal["cache", "scratchpad"] = "cache"

    @model_validator(mode="after")
    def _one_capacity(self) -> SramLevel:
        if self.scope == "core" and (self.capacity_kib is None or self.capacity_mib is not None):
            raise ValueError(f"sram level {self.name!r}: scope 'core' takes capacity_kib (per core)")
        if self.scope == "chip" and (self.capacity_mib is None or self.capacity_kib is not None):
            raise ValueError(f"sram level {self.name!r}: scope 'chip' takes capacity_mib (total)")
        return self


class MemorySpec(Frozen):
    type: MemoryType
    capacity_gb: PosFloat
    bandwidth_gb_s: PosFloat
    stacks: PosInt | None = None
    # Smallest transfer of a random access: 32 B sectors on NVIDIA HBM, 64 B bursts on most
    # others (research/recsys.md section 4 treats it as a parameter of the memory).
    access_granularity_bytes: PosInt = 64


class ScaleUp(Frozen):
    """Chip-to-chip links inside one scale-up domain (NVLink, xGMI, ICI, NeuronLink...)."""

    name: str
    bandwidth_per_direction_gb_s: PosFloat
    links: PosInt | None = None
    topology: Topology
    in_switch_reduction: bool = False
    latency_us: PosFloat


class ScaleOut(Frozen):
    """The datacenter network behind each chip (InfiniBand, RoCE, EFA, DCN)."""

    name: str
    gbit_s_per_chip: PosFloat
    latency_us: PosFloat


class VectorCores(Frozen):
    """Cores with a vector unit and no matrix unit, beside the matrix cores (Gaudi's TPCs)."""

    count: PosInt
    fp32_lanes_per_core: PosInt
    local_sram_kib: PosFloat | None = None  # per core; None: not published, not counted


class DieSpec(Frozen):
    """The physical die behind the product (spare cores, fused-off L2 or HBM sites, SRAM the
    product does not expose) and what the area model needs beyond the simulators' view; the
    area model reads this, the simulators do not."""

    cores: PosInt  # the cores that hold the matrix units
    shared_sram_mib: NonNegFloat
    memory_interfaces: PosInt  # HBM sites, or 32-bit DRAM channels
    # FP32 lanes of each core's vector unit; None: the vector FP32 peak / (2 x clock x cores).
    fp32_lanes_per_core: Annotated[int, Field(ge=0, le=SPEC_MAX)] | None = None
    # SRAM per core as built, when the product exposes less (a GPU SM's combined L1 and shared
    # memory, of which `sram` lists the shared-memory carve-out); None: what `sram` lists.
    core_sram_kib: PosFloat | None = None
    vector_cores: VectorCores | None = None


class NodeSpec(Frozen):
    chips_per_node: PosInt
    scale_up_domain_chips: PosInt
    nics_per_chip: NonNegFloat = 1.0


class PriceEntry(Frozen):
    usd: PosFloat | None = None
    usd_per_chip_hour: PosFloat | None = None
    date: str = Field(pattern=r"^\d{4}(-\d{2})?$")
    kind: str
    source: str
    region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # ISO 3166 code of the market

    @model_validator(mode="after")
    def _one_price(self) -> PriceEntry:
        if (self.usd is None) == (self.usd_per_chip_hour is None):
            raise ValueError("a price entry takes exactly one of usd, usd_per_chip_hour")
        return self


class PeakTflops(Frozen):
    """Dense (no structured sparsity) matrix peak per precision; int8 in tera-ops."""

    fp32: PosFloat | None = None
    tf32: PosFloat | None = None
    bf16: PosFloat | None = None
    fp16: PosFloat | None = None
    fp8: PosFloat | None = None
    int8: PosFloat | None = None
    fp4: PosFloat | None = None


_NUMERIC_SECTIONS = (
    "die_area_mm2", "transistors_billion", "clock_ghz", "num_cores", "matrix_unit", "peak_tflops",
    "vector_fp32_tflops", "sram", "memory", "scale_up", "scale_out", "tdp_w", "node", "die",
)  # fmt: skip


def _stated(value: object) -> bool:
    """A section a chip states: not None and not an empty tuple (an identity test first: comparing
    a model with `==` compares all its fields)."""
    return value is not None and not (isinstance(value, tuple) and not value)


class ChipSpec(Frozen):
    """One accelerator package as sold. Every number carries a source in `sources`, keyed by
    the field it supports."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    name: str
    vendor: Literal["nvidia", "amd", "google", "aws", "intel", "meta", "huawei", "tapeout"]
    family: str = Field(pattern=r"^[a-z0-9-]+$")
    role: Literal["training", "inference", "training+inference"]
    launch_year: Annotated[int, Field(ge=2015, le=2035)]
    process: str
    process_node: ProcessNode | None
    die_area_mm2: PosFloat | None
    dies_per_package: PosInt = 1
    transistors_billion: PosFloat | None = None
    clock_ghz: Annotated[float, Field(gt=0.1, lt=10)]
    num_cores: PosInt
    core_name: str
    matrix_unit: MatrixUnit | None
    peak_tflops: PeakTflops
    vector_fp32_tflops: PosFloat | None = None
    sram: tuple[SramLevel, ...]
    memory: MemorySpec
    scale_up: ScaleUp | None
    scale_out: ScaleOut | None
    tdp_w: PosFloat
    price: tuple[PriceEntry, ...] = ()
    node: NodeSpec
    die: DieSpec | None = None
    sources: dict[str, str]
    notes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> ChipSpec:
        if self.peak_tflops.bf16 is None and self.peak_tflops.fp16 is None:
            raise ValueError("peak_tflops needs bf16 or fp16 (the reference precision)")
        missing = [f for f in _NUMERIC_SECTIONS if f not in self.sources and _stated(getattr(self, f))]
        if missing:
            raise ValueError(f"sources has no entry for {', '.join(missing)}: every number needs one")
        unknown = sorted(set(self.sources) - type(self).model_fields.keys())
        if unknown:
            raise ValueError(f"sources names fields that do not exist: {', '.join(unknown)}")
        if self.matrix_unit is not None:
            self._check_matrix_unit(self.matrix_unit)
        if self.node.scale_up_domain_chips > 1 and self.scale_up is None:
            raise ValueError("node.scale_up_domain_chips > 1 needs a scale_up link")
        if self.die is not None:
            self._check_die(self.die)
        return self

    def _check_die(self, die: DieSpec) -> None:
        """The physical die holds at least what the product enables."""
        if die.cores < self.num_cores:
            raise ValueError(f"die.cores: {die.cores} is fewer than the {self.num_cores} enabled cores")
        exposed_kib = sum(lv.capacity_kib or 0.0 for lv in self.sram if lv.scope == "core")
        if die.core_sram_kib is not None and die.core_sram_kib < exposed_kib:
            raise ValueError(
                f"die.core_sram_kib: {die.core_sram_kib:g} KiB is less than the {exposed_kib:g} KiB "
                f"per core that `sram` lists"
            )

    def _check_matrix_unit(self, mu: MatrixUnit) -> None:
        total_macs = mu.macs * self.num_cores
        if self.die_area_mm2 is not None and self.process_node is not None:
            min_area = (
                total_macs * MIN_TRANSISTORS_PER_BF16_MAC / (LOGIC_MTR_PER_MM2[self.process_node] * 1e6)
            )
            die = self.die_area_mm2 * self.dies_per_package
            if min_area > die:
                raise ValueError(
                    f"matrix_unit: {total_macs:,} bf16 MACs need at least {min_area:,.0f} mm^2 "
                    f"at {self.process_node}, more than the {die:,.0f} mm^2 of silicon"
                )
        implied = 2 * total_macs * self.clock_ghz * 1e9 / units.TERA
        stated = self.peak_tflops.bf16 or self.peak_tflops.fp16 or 0.0
        if not 0.5 <= implied / stated <= 2.0:
            raise ValueError(
                f"matrix_unit: {mu.rows}x{mu.cols}x{mu.per_core} per core x {self.num_cores} cores "
                f"at {self.clock_ghz} GHz gives {implied:,.0f} TFLOP/s, inconsistent with "
                f"peak_tflops.bf16 = {stated:,.0f} TFLOP/s"
            )

    # ---- derived quantities -------------------------------------------------------------
    def peak_flops(self, precision: str) -> float:
        """Dense matrix FLOP/s at `precision`; a precision the chip lacks falls back to the
        next wider one it has (fp8 on an A100 runs as fp16), as a compiler would upcast."""
        for p in FALLBACKS.get(precision, (precision,)):
            value = getattr(self.peak_tflops, p)
            if value is not None:
                return float(value) * units.TERA
        raise ValueError(f"{self.id}: no peak for {precision} or any wider precision")

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats its matrix units run (those with a stated peak)."""
        return tuple(p for p, v in self.peak_tflops.model_dump().items() if v is not None)

    def require_formats(self, used: dict[str, str]) -> None:
        """Refuse matmuls in an 8- or 4-bit format the chip has no matrix units for (`used`: field
        -> format). Wider formats stand in for each other (fp16 for bf16, tf32 for fp32), but
        running fp8 as bf16 would report a speed-up the chip cannot give."""
        for field, precision in used.items():
            if narrow(precision) and precision not in self.formats:
                raise TapeoutError(
                    f"field '{field}': {self.id} has no {precision} matrix units; it runs "
                    f"{', '.join(self.formats)}"
                )

    @property
    def vector_flops(self) -> float:
        """Non-matrix FP32 FLOP/s; when unpublished, 1/16 of the bf16 matrix peak."""
        if self.vector_fp32_tflops is not None:
            return self.vector_fp32_tflops * units.TERA
        return self.peak_flops("bf16") / 16

    @property
    def memory_bandwidth(self) -> float:
        return self.memory.bandwidth_gb_s * units.GB

    @cached_property
    def sram_per_core_bytes(self) -> float:
        return sum((s.capacity_kib or 0.0) * units.KIB for s in self.sram if s.scope == "core")

    @cached_property
    def sram_shared_bytes(self) -> float:
        return sum((s.capacity_mib or 0.0) * units.MIB for s in self.sram if s.scope == "chip")

    @property
    def link_bandwidth(self) -> float:
        """Scale-up bytes/s per direction per chip (0 without a scale-up link)."""
        return self.scale_up.bandwidth_per_direction_gb_s * units.GB if self.scale_up else 0.0

    @property
    def nic_bandwidth(self) -> float:
        """Scale-out bytes/s per direction per chip."""
        return self.scale_out.gbit_s_per_chip * units.GB / 8 if self.scale_out else 0.0

    @property
    def ridge_flop_per_byte(self) -> float:
        return self.peak_flops("bf16") / self.memory_bandwidth

    @cached_property
    def _hash(self) -> int:
        return hash(self.model_dump_json())

    def __hash__(self) -> int:  # specs are keys of cost caches; equal specs hash equal
        return self._hash

    def summary(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "vendor": self.vendor,
            "bf16_tflops": self.peak_tflops.bf16,
            "memory": f"{self.memory.capacity_gb:g} GB {self.memory.type}",
            "memory_bandwidth_gb_s": self.memory.bandwidth_gb_s,
            "tdp_w": self.tdp_w,
            "process": self.process,
        }
