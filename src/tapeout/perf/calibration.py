"""Efficiency figures: data, not code.

`calibration.yaml` holds, per software stack (the kernel and collective libraries a chip family
runs: CUDA, ROCm, ...), the fraction of a datasheet peak that a tuned library reaches. Each figure
names the public cases it was derived from; `tapeout calibrate` re-derives them from those cases
alone (see `tapeout.calibrate`). A figure is fitted only where a stack has at least two public
measurements of that quantity; otherwise it comes from another published source, stated in the
file, or from the default (the fit over all stacks).

The figures in force are those of the file given to `use` (the CLI's `--calibration PATH`), else
of the file `TAPEOUT_CALIBRATION` names, else the shipped file. Every file read is checked: each
figure finite and within `LIMITS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError

CALIBRATION_FILE = Path(__file__).parent / "calibration.yaml"
ENV_VAR = "TAPEOUT_CALIBRATION"
SCHEMA = "tapeout-calibration/1"


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


@dataclass(frozen=True, slots=True)
class Limit:
    """The values a figure may take. Generous: it catches a typo or a runaway fit, it does not
    judge a figure."""

    low: float
    high: float
    low_open: bool
    high_open: bool
    unit: str

    def admits(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right} {self.unit}"


_FRACTION = Limit(0.0, 1.0, True, False, "(a fraction of a datasheet peak)")
LIMITS: Mapping[str, Limit] = {
    "matmul_16bit": _FRACTION,
    "matmul_8bit": _FRACTION,
    "attention": _FRACTION,
    "memory": _FRACTION,
    "link": _FRACTION,
    "in_switch": _FRACTION,
    # The fit searches 0-6 blocks; dozens would mean a CTA does little but its prologue.
    "attention_overhead_blocks": Limit(0.0, 64.0, False, False, "key-block iterations"),
    # A launch costs microseconds; a millisecond would swamp most ops the cases time.
    "kernel_overhead_us": Limit(0.0, 1000.0, False, False, "us"),
    # A few pJ at 5 nm (other nodes are scaled in perf/power.py, not here).
    "serving_pj_per_flop": Limit(0.0, 100.0, True, False, "pJ/FLOP"),
    "training_pj_per_flop": Limit(0.0, 100.0, True, False, "pJ/FLOP"),
    # HBM moves a byte for about 30 pJ, DDR for up to about 150.
    "dram_pj_per_byte": Limit(0.0, 1000.0, True, False, "pJ/byte"),
    # All of TDP drawn while idle would leave no power for work.
    "idle_power_fraction": Limit(0.0, 1.0, False, True, "(of TDP)"),
}


def _value(entry: Any, origin: str | Path, figure: str, stack: str) -> float:
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    where = f"{origin}: figures.{figure}.{stack}"
    limit = LIMITS[figure]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TapeoutError(f"{where}: expected a number in {limit}, got {value!r}")
    if not math.isfinite(value):
        raise TapeoutError(f"{where}: value {value!r} is not finite; allowed range {limit}")
    if not limit.admits(value):
        raise TapeoutError(f"{where}: value {value!r} is outside the allowed range {limit}")
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


def _mapping(value: Any, origin: str | Path, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TapeoutError(f"{origin}: field {field!r}: expected a mapping, got {value!r}")
    return value


def _families(stacks_raw: Mapping[str, Any], origin: str | Path) -> dict[str, str]:
    """The stack of each chip family; a family in two stacks would get either's figures."""
    out: dict[str, str] = {}
    for stack, families in stacks_raw.items():
        if stack in ("default", "explain"):  # the figure entries use these keys themselves
            raise TapeoutError(f"{origin}: field 'stacks': {stack!r} cannot name a stack")
        if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
            raise TapeoutError(
                f"{origin}: field 'stacks.{stack}': expected a list of chip families, got {families!r}"
            )
        for family in families:
            if family in out:
                raise TapeoutError(
                    f"{origin}: field 'stacks.{stack}': family {family!r} is already in stack {out[family]!r}"
                )
            out[family] = stack
    return out


def parse_table(data: Mapping[str, Any], origin: str | Path = CALIBRATION_FILE) -> CalibrationTable:
    """Check and parse a calibration file's contents; errors name `origin`, the field and the value."""
    if data.get("schema") != SCHEMA:
        raise TapeoutError(f"{origin}: field 'schema': expected {SCHEMA!r}, got {data.get('schema')!r}")
    stacks_raw = _mapping(data.get("stacks") or {}, origin, "stacks")
    figures_raw = _mapping(data.get("figures") or {}, origin, "figures")
    unknown = sorted(set(figures_raw) - set(FIGURES))
    missing = sorted(set(FIGURES) - set(figures_raw))
    if unknown or missing:
        raise TapeoutError(f"{origin}: figures: unknown {unknown}, missing {missing}")
    family_stack = _families(stacks_raw, origin)
    for name, entries in figures_raw.items():
        stray = sorted(
            set(_mapping(entries, origin, f"figures.{name}")) - {"explain", "default"} - set(stacks_raw)
        )
        if stray:
            raise TapeoutError(f"{origin}: figures.{name}: unknown stacks {stray}")
    default = Calibration(**{f: _value(figures_raw[f].get("default"), origin, f, "default") for f in FIGURES})
    stacks: dict[str, Calibration] = {}
    for stack in stacks_raw:
        values = {
            f: _value(figures_raw[f][stack], origin, f, stack) for f in FIGURES if stack in figures_raw[f]
        }
        stacks[stack] = replace(default, **values)
    return CalibrationTable(family_stack, default, stacks, data)


def load_table(path: Path) -> CalibrationTable:
    """Read and check one calibration file."""
    data = load_data_file(path)
    if not isinstance(data, Mapping):
        raise TapeoutError(f"{path}: expected a mapping with the fields 'schema', 'stacks' and 'figures'")
    return parse_table(data, path)


# The file `use` chose, with its figures; None: the file TAPEOUT_CALIBRATION names, else the
# shipped one.
_chosen: tuple[Path, CalibrationTable] | None = None

# How many times the figures in force have changed: a cache keyed on anything but a `System`
# (which carries its figures) keys on it too.
_generation = 0


def generation() -> int:
    """Counts the changes of the figures in force (`use`, `reload`)."""
    return _generation


def active_file() -> Path:
    """The file whose figures are in force."""
    if _chosen is not None:
        return _chosen[0]
    named = os.environ.get(ENV_VAR, "").strip()
    return Path(named).expanduser() if named else CALIBRATION_FILE


@cache
def table() -> CalibrationTable:
    """The figures in force (see `active_file`), read once until `use` or `reload`."""
    if _chosen is not None:
        return _chosen[1]
    path = active_file()
    try:
        return load_table(path)
    except TapeoutError as exc:
        if path == CALIBRATION_FILE:
            raise
        raise TapeoutError(f"{exc} (the calibration file {ENV_VAR} names)") from exc


def use(path: Path | None) -> None:
    """Put the figures of the calibration file `path` in force for everything that follows; None
    goes back to the file TAPEOUT_CALIBRATION names, else the shipped one. The file is read and
    checked now: a bad one raises and leaves the figures in force as they were."""
    global _chosen
    _chosen = None if path is None else (path.expanduser().absolute(), load_table(path))
    _forget()


def reload() -> None:
    """Read the file in force again (after it was rewritten)."""
    use(_chosen[0] if _chosen is not None else None)


def _forget() -> None:
    global _generation
    _generation += 1
    table.cache_clear()


def calibration_for(family: str) -> Calibration:
    return table().for_family(family)
