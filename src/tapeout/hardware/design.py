"""Chips of our own: a design file of architectural choices, expanded into a catalog entry.

A design states what an architect chooses (node, clock, cores and matrix units, precisions,
SRAM, memory stacks or channels, links, power budget, node size) and nothing that follows from
those: peaks, memory capacity and bandwidth are derived here, and area, yield, unit cost and
power by `tapeout.cost`. The expanded entry is an ordinary `ChipSpec`, so every simulator runs
a design exactly as it runs a bought chip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pydantic

from tapeout.errors import TapeoutError, entry_id, from_validation
from tapeout.frozen import Frozen
from tapeout.hardware.spec import (
    MatrixUnit,
    MemoryType,
    NodeSpec,
    PosFloat,
    PosInt,
    ProcessNode,
    ScaleOut,
    ScaleUp,
    SramLevel,
)
from tapeout.units import Num

# Per HBM stack (research/hardware_cost.md 2.6): bandwidth by generation, and capacity by
# stack height (8-Hi and 12-Hi parts; HBM2 4- and 8-Hi).
HBM_STACK_GB_S: dict[str, float] = {"HBM2": 307.0, "HBM2e": 460.0, "HBM3": 819.0, "HBM3e": 1200.0}
HBM_STACK_GB: dict[str, tuple[float, ...]] = {
    "HBM2": (4.0, 8.0), "HBM2e": (8.0, 16.0, 24.0), "HBM3": (16.0, 24.0), "HBM3e": (24.0, 36.0),
}  # fmt: skip
# One 32-bit DRAM channel at the usual JEDEC pin rates: LPDDR5 6.4 Gb/s, LPDDR5X 8.533, DDR5
# 4.8, GDDR6 16, GDDR7 32.
DRAM_CHANNEL_GB_S: dict[str, float] = {
    "LPDDR5": 25.6, "LPDDR5X": 34.1, "DDR5": 19.2, "GDDR6": 64.0, "GDDR7": 128.0,
}  # fmt: skip


class DesignMemory(Frozen):
    type: MemoryType
    interfaces: PosInt  # HBM stacks, or 32-bit DRAM channels
    gb_per_interface: PosFloat


class Design(Frozen):
    """The choices of one chip design (`hardware/designs/*.yaml`)."""

    id: str
    name: str
    role: Literal["training", "inference", "training+inference"]
    launch_year: int
    process_node: ProcessNode
    clock_ghz: PosFloat
    num_cores: PosInt
    core_name: str
    matrix_unit: MatrixUnit
    eight_bit: tuple[Literal["fp8", "int8"], ...]  # run at twice the bf16 rate
    vector_lanes_per_core: PosInt  # FP32 lanes
    sram: tuple[SramLevel, ...]
    memory: DesignMemory
    scale_up: ScaleUp | None
    scale_out: ScaleOut | None
    power_budget_w: PosFloat
    node: NodeSpec
    rationale: tuple[str, ...]

    def chip(self) -> dict[str, Any]:
        """The catalog entry this design makes (a mapping in the catalog's schema)."""
        mem = self.memory
        hbm = mem.type in HBM_STACK_GB_S
        problem = stack_problem(mem.type, mem.gb_per_interface)
        if problem:
            raise TapeoutError(f"{self.id}: {problem}")
        per_interface = interface_gb_s(mem.type)
        macs = self.matrix_unit.macs * self.num_cores
        got = derived(macs, self.vector_lanes_per_core * self.num_cores, self.clock_ghz, mem.interfaces,
                      mem.gb_per_interface, per_interface)  # fmt: skip
        bf16, fp32_vector = float(got["bf16_tflops"]), float(got["fp32_tflops"])
        design = f"design choice (hardware/designs/{self.id}.yaml)"
        return {
            "id": self.id, "name": self.name, "vendor": "tapeout", "family": self.id,
            "role": self.role, "launch_year": self.launch_year,
            "process": f"TSMC {self.process_node}", "process_node": self.process_node,
            "die_area_mm2": None, "clock_ghz": self.clock_ghz, "num_cores": self.num_cores,
            "core_name": self.core_name, "matrix_unit": self.matrix_unit.model_dump(),
            "peak_tflops": {"bf16": bf16, "fp16": bf16, "fp32": fp32_vector,
                            **{p: 2 * bf16 for p in self.eight_bit}},
            "vector_fp32_tflops": fp32_vector,
            "sram": [lv.model_dump(exclude_none=True) for lv in self.sram],
            "memory": {"type": mem.type, "capacity_gb": float(got["capacity_gb"]),
                       "bandwidth_gb_s": float(got["bandwidth_gb_s"]),
                       **({"stacks": mem.interfaces} if hbm else {})},
            "scale_up": self.scale_up.model_dump() if self.scale_up else None,
            "scale_out": self.scale_out.model_dump() if self.scale_out else None,
            "tdp_w": self.power_budget_w,
            "node": self.node.model_dump(),
            "sources": {
                "clock_ghz": design, "num_cores": design, "matrix_unit": design, "sram": design,
                "scale_up": design, "scale_out": design, "node": design,
                "tdp_w": f"the power budget, {design}; tapeout cost checks the modelled power against it",
                "peak_tflops": f"derived: 2 x {macs:,} bf16 MACs x {self.clock_ghz} GHz; "
                               f"{'/'.join(self.eight_bit) or 'no 8-bit'} at twice that; fp32 on the vector lanes",
                "vector_fp32_tflops": f"derived: 2 x {self.vector_lanes_per_core} lanes x {self.num_cores} cores x clock",
                "memory": f"derived: {mem.interfaces} x {mem.type} at {per_interface:g} GB/s and "
                          f"{mem.gb_per_interface:g} GB each (research/hardware_cost.md 2.6)",
            },
            "notes": [*self.rationale, "No market price: its unit cost comes from `tapeout cost`."],
        }  # fmt: skip


def interface_gb_s(memory_type: str) -> float:
    """GB/s of one HBM stack or 32-bit DRAM channel of `memory_type`."""
    return HBM_STACK_GB_S[memory_type] if memory_type in HBM_STACK_GB_S else DRAM_CHANNEL_GB_S[memory_type]


def stack_problem(memory_type: str, gb_per_interface: float) -> str:
    """Why `gb_per_interface` cannot be a stack of HBM `memory_type` ("" when it can, or for DRAM)."""
    if memory_type not in HBM_STACK_GB_S or gb_per_interface in HBM_STACK_GB[memory_type]:
        return ""
    known = ", ".join(f"{g:g}" for g in HBM_STACK_GB[memory_type])
    return (
        f"field 'memory.gb_per_interface': {gb_per_interface:g} GB is not a {memory_type} stack; "
        f"known: {known} (unit: GB)"
    )


def derived(macs: Num, lanes: Num, clock_ghz: Num, interfaces: Num, gb_per_interface: Num,
            interface_gb_s: float) -> dict[str, Num]:  # fmt: skip
    """What a design's choices give (numbers, or one per design): the dense bf16 and FP32 vector
    TFLOP/s of `macs` bf16 MACs and `lanes` FP32 lanes at `clock_ghz`, and the memory's GB and GB/s."""
    return {
        "bf16_tflops": 2 * macs * clock_ghz / 1e3,
        "fp32_tflops": 2 * lanes * clock_ghz / 1e3,
        "capacity_gb": interfaces * gb_per_interface,
        "bandwidth_gb_s": interfaces * interface_gb_s,
    }


def expand_design(data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    try:
        design = Design.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, entry_id(data)) from None
    return design.chip()
