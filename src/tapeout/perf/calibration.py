"""Efficiency figures: data, not code.

`calibration.yaml` holds, per software stack (the kernel and collective libraries a chip family
runs: CUDA, ROCm, ...), the fraction of a datasheet peak that a tuned library reaches. Each figure
names the public cases it was derived from; `tapeout calibrate` re-derives them from those cases
alone (see `tapeout.calibrate`). A figure is fitted only where a stack has at least two public
measurements of that quantity; otherwise it comes from another published source, stated in the
file, or from the default (the fit over all stacks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError

CALIBRATION_FILE = Path(__file__).parent / "calibration.yaml"


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """The efficiency figures one chip runs with. All are fractions of a datasheet peak except
    the overheads."""

    matmul_16bit: float  # of the dense matrix peak, for 16- and 32-bit inputs
    matmul_8bit: float  # of the dense matrix peak, for 8- and 4-bit inputs
    attention: float  # of the matrix peak inside a fused attention kernel
    attention_overhead_blocks: float  # per-CTA prologue/epilogue, in key-block iterations
    memory: float  # of the datasheet DRAM bandwidth, for streaming kernels
    link: float  # of the per-direction scale-up / scale-out bandwidth, ring and point-to-point
    in_switch: float  # of the per-direction link bandwidth, for in-switch reduction (NVLS)
    kernel_overhead_us: float  # fixed cost of launching one kernel
    serving_pj_per_flop: float  # effective energy of a 16-bit FLOP of a serving iteration, 5 nm class
    training_pj_per_flop: float  # the same for a training step
    dram_pj_per_byte: float  # dynamic energy of moving one DRAM byte
    idle_power_fraction: float  # of TDP, drawn while the chip is busy with nothing

    def matmul(self, precision: str) -> float:
        return self.matmul_8bit if precision in ("fp8", "int8", "fp4") else self.matmul_16bit

    def with_values(self, **values: float) -> Calibration:
        return replace(self, **values)


FIGURES = tuple(f.name for f in fields(Calibration))


def _value(entry: Any, where: str) -> float:
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise TapeoutError(f"{CALIBRATION_FILE}: {where}: expected a non-negative number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class CalibrationTable:
    """Stacks, the families each covers, and the figures of each."""

    stack_of_family: Mapping[str, str]
    default: Calibration
    stacks: Mapping[str, Calibration]
    raw: Mapping[str, Any]

    def for_family(self, family: str) -> Calibration:
        stack = self.stack_of_family.get(family)
        return self.stacks.get(stack, self.default) if stack else self.default

    def stack(self, family: str) -> str:
        return self.stack_of_family.get(family, "default")


def parse_table(data: Mapping[str, Any]) -> CalibrationTable:
    if data.get("schema") != "tapeout-calibration/1":
        raise TapeoutError(f"{CALIBRATION_FILE}: field 'schema': expected 'tapeout-calibration/1'")
    stacks_raw = data.get("stacks") or {}
    figures_raw = data.get("figures") or {}
    unknown = sorted(set(figures_raw) - set(FIGURES))
    missing = sorted(set(FIGURES) - set(figures_raw))
    if unknown or missing:
        raise TapeoutError(f"{CALIBRATION_FILE}: figures: unknown {unknown}, missing {missing}")
    family_stack = {fam: stack for stack, fams in stacks_raw.items() for fam in fams}
    for name, entries in figures_raw.items():
        stray = sorted(set(entries) - {"explain", "default"} - set(stacks_raw))
        if stray:
            raise TapeoutError(f"{CALIBRATION_FILE}: figures.{name}: unknown stacks {stray}")
    default = Calibration(**{f: _value(figures_raw[f].get("default"), f"{f}.default") for f in FIGURES})
    stacks: dict[str, Calibration] = {}
    for stack in stacks_raw:
        values = {
            f: _value(figures_raw[f][stack], f"{f}.{stack}") for f in FIGURES if stack in figures_raw[f]
        }
        stacks[stack] = replace(default, **values)
    return CalibrationTable(family_stack, default, stacks, data)


@cache
def table() -> CalibrationTable:
    data = load_data_file(CALIBRATION_FILE)
    if not isinstance(data, Mapping):
        raise TapeoutError(f"{CALIBRATION_FILE}: expected a mapping")
    return parse_table(data)


def calibration_for(family: str) -> Calibration:
    return table().for_family(family)
