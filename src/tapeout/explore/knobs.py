"""Knobs: the fields of a design file a space may vary, their physical bounds, and their values.

A knob is named by its path in the design file (`hardware/designs/*.yaml`): `clock_ghz`,
`num_cores`, `matrix_unit.rows`, `sram.global.capacity_mib` (an SRAM level by its name),
`memory.type`, `memory.interfaces` (HBM stacks or 32-bit DRAM channels), `scale_up.links`,
`process_node`... A space gives each knob a range, `{min, max, step}` (a grid of steps) or
`{min, max, log: true}` (log-uniform; `points` grid values, default 5), or `{choices: [...]}`
(a list alone means choices too). The bounds are physical: what a chip could be and what the
cost model can price; a range outside them is refused by name.

`scale_up.links` keeps the base design's bandwidth per link: the per-direction bandwidth of the
chip is the base's divided by its links, times the knob's count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, get_args

import numpy as np

from tapeout.errors import TapeoutError, shown
from tapeout.hardware.spec import MemoryType, ProcessNode

Kind = Literal["int", "float", "choice"]
Value = int | float | str
DEFAULT_LOG_POINTS = 5
MAX_GRID_VALUES = 100_000  # values of one knob on a grid: past this, a step is a typo


@dataclass(frozen=True, slots=True, kw_only=True)
class KnobSpec:
    """What a knob may be: its kind, its physical bounds (numbers) or its known values (choices),
    and its unit."""

    kind: Kind
    low: float = 0.0
    high: float = 0.0
    unit: str = ""
    known: tuple[str, ...] = ()
    why: str = ""  # what sets the bounds


# Bounds: what the schema of a chip admits (`hardware.spec`) and what the cost rules can price:
# the matmul rule tiles matrix units of at most 512 rows and columns (`perf.matmul`).
FIXED_KNOBS: dict[str, KnobSpec] = {
    "clock_ghz": KnobSpec(kind="float", low=0.1, high=10.0, unit="GHz", why="a chip's clock (hardware.spec)"),
    "num_cores": KnobSpec(kind="int", low=1, high=100_000, unit="cores"),
    "matrix_unit.rows": KnobSpec(kind="int", low=1, high=512, unit="MACs", why="the matmul rule tiles at most 512"),
    "matrix_unit.cols": KnobSpec(kind="int", low=1, high=512, unit="MACs", why="the matmul rule tiles at most 512"),
    "matrix_unit.per_core": KnobSpec(kind="int", low=1, high=64, unit="units"),
    "vector_lanes_per_core": KnobSpec(kind="int", low=1, high=16_384, unit="lanes"),
    "memory.type": KnobSpec(kind="choice", known=get_args(MemoryType)),
    "memory.interfaces": KnobSpec(kind="int", low=1, high=64, unit="stacks or channels"),
    "memory.gb_per_interface": KnobSpec(kind="float", low=0.25, high=128.0, unit="GB"),
    "scale_up.links": KnobSpec(kind="int", low=1, high=256, unit="links"),
    "scale_up.bandwidth_per_direction_gb_s": KnobSpec(kind="float", low=1.0, high=100_000.0, unit="GB/s"),
    "process_node": KnobSpec(kind="choice", known=get_args(ProcessNode)),
    "power_budget_w": KnobSpec(kind="float", low=1.0, high=5_000.0, unit="W"),
}  # fmt: skip
SRAM_KIB = KnobSpec(kind="float", low=1.0, high=65_536.0, unit="KiB", why="per core")
SRAM_MIB = KnobSpec(kind="float", low=0.0625, high=65_536.0, unit="MiB", why="per chip")


def known_knobs(base: Mapping[str, Any]) -> dict[str, KnobSpec]:
    """Every knob of a design: the fixed ones, and one per SRAM level the design lists."""
    out = dict(FIXED_KNOBS)
    for level in base.get("sram") or ():
        if isinstance(level, Mapping) and isinstance(level.get("name"), str):
            field = "capacity_kib" if level.get("scope") == "core" else "capacity_mib"
            out[f"sram.{level['name']}.{field}"] = SRAM_KIB if field == "capacity_kib" else SRAM_MIB
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Knob:
    """One knob of a space: a range (`low`..`high`, by `step` or log-uniform) or `choices`."""

    name: str
    spec: KnobSpec
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    points: int = DEFAULT_LOG_POINTS
    choices: tuple[Value, ...] = ()

    def grid(self) -> tuple[Value, ...]:
        """The knob's values on a grid, in order."""
        return _grid(self)

    def _values(self) -> tuple[Value, ...]:
        if self.choices:
            return self.choices
        if self.log:
            raw = np.geomspace(self.low, self.high, self.points) if self.high > self.low else [self.low]
            return _dedupe(self._typed(float(v)) for v in raw)
        step = self.step if self.step is not None else self.high - self.low or 1.0
        count = math.floor((self.high - self.low) / step + 1e-9) + 1
        return _dedupe(self._typed(self.low + i * step) for i in range(count))

    def sample(self, rng: np.random.Generator) -> Value:
        """One random value: uniform over the choices or the steps, log-uniform for `log`."""
        return self.sampler()(rng)

    def sampler(self) -> Callable[[np.random.Generator], Value]:
        """`sample` with the knob's grid looked up once, for drawing many values."""
        if self.choices or self.step is not None:
            values = self.grid()
            count = len(values)
            return lambda rng: values[int(rng.integers(count))]
        if self.log:
            low, high = math.log(self.low), math.log(self.high)
            return lambda rng: self._typed(math.exp(rng.uniform(low, high)))
        return lambda rng: self._typed(rng.uniform(self.low, self.high))

    def _typed(self, x: float) -> Value:
        return round(float(x)) if self.spec.kind == "int" else round(float(x), 12)


@lru_cache(maxsize=1024)
def _grid(knob: Knob) -> tuple[Value, ...]:
    return knob._values()


def _dedupe(values: Any) -> tuple[Value, ...]:
    return tuple(dict.fromkeys(values))


def parse_knob(name: str, raw: Any, spec: KnobSpec, where: str) -> Knob:
    """A knob from its entry in a space file; every bad entry named with its bound and unit."""
    field = f"{where}: field 'knobs.{name}'"
    if isinstance(raw, list) or (isinstance(raw, Mapping) and "choices" in raw):
        values = raw if isinstance(raw, list) else raw["choices"]
        return Knob(name=name, spec=spec, choices=_choices(values, spec, field))
    if not isinstance(raw, Mapping):
        return Knob(name=name, spec=spec, choices=_choices([raw], spec, field))
    if spec.kind == "choice":
        raise TapeoutError(f"{field}: takes choices ({', '.join(spec.known)}), not a range")
    unknown = sorted(set(raw) - {"min", "max", "step", "log", "points"})
    if unknown:
        raise TapeoutError(f"{field}: unknown keys {unknown}; a range takes min, max, and step or log")
    low, high = (_bound(raw.get(b), b, spec, field) for b in ("min", "max"))
    if low > high:
        raise TapeoutError(f"{field}: the range is empty: min {low:g} > max {high:g} {spec.unit}".rstrip())
    log, step = raw.get("log", False), raw.get("step")
    if not isinstance(log, bool):
        raise TapeoutError(f"{field}.log: expected true or false, got {shown(log)}")
    if log and step is not None:
        raise TapeoutError(f"{field}: give either step or log, not both")
    if log and low <= 0:
        raise TapeoutError(f"{field}.min: a log range needs min > 0, got {low:g} {spec.unit}".rstrip())
    if step is not None:
        step = _step(step, low, high, spec, field)
    points = raw.get("points", DEFAULT_LOG_POINTS)
    if not log and "points" in raw:
        raise TapeoutError(f"{field}.points: grid points are for log ranges; a linear range takes a step")
    if not isinstance(points, int) or isinstance(points, bool) or not 1 <= points <= MAX_GRID_VALUES:
        raise TapeoutError(
            f"{field}.points: expected a whole number in [1, {MAX_GRID_VALUES:,}], got {shown(points)}"
        )
    return Knob(name=name, spec=spec, low=low, high=high, step=step, log=log, points=points)


def _number(value: Any, field: str, unit: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise TapeoutError(f"{field}: expected a finite number ({unit}), got {shown(value)}")
    return float(value)


def _bound(value: Any, which: str, spec: KnobSpec, field: str) -> float:
    if value is None:
        raise TapeoutError(f"{field}.{which}: missing; a range takes min and max ({spec.unit})")
    x = _number(value, f"{field}.{which}", spec.unit)
    why = f" ({spec.why})" if spec.why else ""
    if x < spec.low:
        raise TapeoutError(
            f"{field}.{which}: {x:g} {spec.unit} is below the physical bound {spec.low:g}{why}"
        )
    if x > spec.high:
        raise TapeoutError(
            f"{field}.{which}: {x:g} {spec.unit} is above the physical bound {spec.high:g}{why}"
        )
    if spec.kind == "int" and x != int(x):
        raise TapeoutError(f"{field}.{which}: {x:g} is not a whole number of {spec.unit}")
    return x


def _step(value: Any, low: float, high: float, spec: KnobSpec, field: str) -> float:
    step = _number(value, f"{field}.step", spec.unit)
    if step <= 0:
        raise TapeoutError(f"{field}.step: must be > 0 {spec.unit}, got {step:g}")
    if spec.kind == "int" and step != int(step):
        raise TapeoutError(f"{field}.step: {step:g} is not a whole number of {spec.unit}")
    if (high - low) / step + 1 > MAX_GRID_VALUES:
        raise TapeoutError(
            f"{field}.step: {step:g} {spec.unit} makes over {MAX_GRID_VALUES:,} values from {low:g} to {high:g}"
        )
    return step


def _choices(values: Sequence[Any], spec: KnobSpec, field: str) -> tuple[Value, ...]:
    if not values:
        raise TapeoutError(f"{field}: no choices given")
    out: list[Value] = []
    for v in values:
        if spec.kind == "choice":
            if v not in spec.known:
                raise TapeoutError(f"{field}: unknown choice {shown(v)}; known: {', '.join(spec.known)}")
            out.append(str(v))
        else:
            out.append(_typed_bound(v, spec, field))
    return _dedupe(out)


def _typed_bound(v: Any, spec: KnobSpec, field: str) -> Value:
    x = _bound(v, "choices", spec, field)
    return int(x) if spec.kind == "int" else x


def apply(base: Mapping[str, Any], knobs: Mapping[str, Value]) -> dict[str, Any]:
    """The design mapping with the knobs' values at their paths (a new mapping; `base` is
    untouched)."""
    out = dict(base)  # a nested mapping is copied only where a knob writes into it
    copied: set[str] = set()
    for name in knobs:
        head = name.partition(".")[0]
        if head not in copied and "." in name:
            copied.add(head)
            if head == "sram":
                out["sram"] = [dict(level) for level in base.get("sram") or ()]
            else:
                out[head] = dict(base[head])
    for name, value in knobs.items():
        head, _, rest = name.partition(".")
        if head == "sram":
            level, _, field = rest.partition(".")
            next(lv for lv in out["sram"] if lv.get("name") == level)[field] = value
        elif head == "scale_up" and rest == "links":
            out["scale_up"]["links"] = value
            if "scale_up.bandwidth_per_direction_gb_s" not in knobs:
                out["scale_up"]["bandwidth_per_direction_gb_s"] = scale_up_gb_s(base["scale_up"], knobs)
        elif rest:
            out[head][rest] = value
        else:
            out[head] = value
    return out


def scale_up_gb_s(base_up: Mapping[str, Any], knobs: Mapping[str, Value]) -> float:
    """The per-direction GB/s of a design's scale-up link: its knob, else the base's bandwidth
    per link times the `scale_up.links` knob, else the base's."""
    if "scale_up.bandwidth_per_direction_gb_s" in knobs:
        return float(knobs["scale_up.bandwidth_per_direction_gb_s"])
    bandwidth = float(base_up["bandwidth_per_direction_gb_s"])
    if "scale_up.links" in knobs:
        return bandwidth / int(base_up.get("links") or 1) * float(knobs["scale_up.links"])
    return bandwidth
