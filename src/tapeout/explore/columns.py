"""The silicon of many designs of one design file at once.

The cost rules run over arrays, one entry per design: `cost.area.area_blocks`,
`cost.unit.package_costs` and `sustained_clock`, `perf.energy.flop_parts`, `cost.tco.tco_parts`,
`hardware.design.derived`. `explore.silicon.silicon` gives each design's figures alone, and
`tests/test_explore.py` holds the two to 1e-9 with the same reasons.

Designs are grouped by what the rules take as one value (process node and memory type). Within a
group every numeric choice is a column, read from the knobs as `explore.knobs.apply` writes them
into the design file. What a group shares (styles, family, formats, links) is read from the chip
of one of its designs. A design that passes its constraints and checks gets its chip (a
`ChipSpec` through the schema), which the workloads read; the others need none. A group none of
whose designs makes a chip is left to the scalar path, which names each design's reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import numpy.typing as npt

from tapeout.cost.area import area_blocks, die_inputs, die_links_gb_s, total_area
from tapeout.cost.silicon import silicon as silicon_data
from tapeout.cost.tco import TcoAssumptions, tco_parts, usd_per_hour
from tapeout.cost.unit import (
    Power,
    design_problem,
    dies_per_wafer,
    nre_usd,
    package_costs,
    sustained_clock,
    wafer_problem,
)
from tapeout.errors import TapeoutError
from tapeout.explore.knobs import Value, scale_up_gb_s
from tapeout.explore.silicon import Bound, Silicon, constraints, design_chip, silicon
from tapeout.hardware.design import HBM_STACK_GB_S, Design, derived, interface_gb_s, stack_problem
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.calibration import table
from tapeout.perf.energy import (
    PJ,
    distances_mm,
    dram_pj_per_byte,
    energy_table,
    flop_inputs,
    flop_parts,
    flop_total,
)
from tapeout.units import GB, KIB, MIB, TERA, Num

Floats = npt.NDArray[np.float64]


def silicon_batch(
    base: Mapping[str, object],
    design: Design,
    points: Sequence[Mapping[str, Value]],
    *,
    origin: str,
    volume: int,
    tco: TcoAssumptions,
    bounds: tuple[Bound, ...],
) -> list[Silicon]:
    """The silicon of each design `points` makes of the design file `base` (`design`: the same,
    validated), in order; as `explore.silicon.silicon` gives it for each alone."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(points):
        key = (str(p.get("process_node", design.process_node)), str(p.get("memory.type", design.memory.type)))
        groups.setdefault(key, []).append(i)
    out: list[Silicon] = [Silicon(chip=None, metrics={})] * len(points)
    for rows in groups.values():
        group = _Group(base, design, [points[i] for i in rows], origin=origin, volume=volume, tco=tco,
                       bounds=bounds)  # fmt: skip
        for i, got in zip(rows, group.silicons(), strict=True):
            out[i] = got
    return out


class _Group:
    """Designs that share their process node and memory type."""

    def __init__(self, base: Mapping[str, object], design: Design, points: Sequence[Mapping[str, Value]], *,
                 origin: str, volume: int, tco: TcoAssumptions, bounds: tuple[Bound, ...]) -> None:  # fmt: skip
        self.base, self.design, self.points, self.origin = base, design, points, origin
        self.volume, self.tco, self.bounds = volume, tco, bounds
        self._pj: dict[str, Floats] = {}
        self._flop: tuple[ChipSpec, Floats, Floats, Num, Num, Floats] | None = None  # set by `_figures`

    def column(self, name: str, default: float) -> Floats:
        return np.array([float(p.get(name, default)) for p in self.points], dtype=np.float64)

    def silicons(self) -> list[Silicon]:
        chips: dict[int, ChipSpec] = {}
        for i, p in enumerate(self.points):  # the chip of one design gives what the group shares
            try:
                chips[i] = design_chip(self.base, p, self.origin)
                break
            except TapeoutError:
                continue
        try:
            if not chips:
                raise TapeoutError("no design of the group makes a chip")
            figures = self._figures(next(iter(chips.values())))
        except TapeoutError:  # what the group shares cannot be costed: each design says why
            return [self._scalar(p) for p in self.points]
        return [self._judge(i, p, figures, chips) for i, p in enumerate(self.points)]

    def _scalar(self, p: Mapping[str, Value]) -> Silicon:
        return silicon(self.base, p, origin=self.origin, volume=self.volume, tco=self.tco, bounds=self.bounds)

    def _figures(self, rep: ChipSpec) -> tuple[dict[str, Floats], ...]:
        """Every silicon metric of every design of the group, its power by part, and what the
        checks read besides (dies per wafer, memory sites); `rep` is the chip of one of them."""
        d, s, e = self.design, silicon_data(), energy_table()
        mu = d.matrix_unit
        cores = self.column("num_cores", d.num_cores)
        rows, cols = self.column("matrix_unit.rows", mu.rows), self.column("matrix_unit.cols", mu.cols)
        macs = cores * (rows * cols * self.column("matrix_unit.per_core", mu.per_core))
        lanes = cores * self.column("vector_lanes_per_core", d.vector_lanes_per_core)
        interfaces = self.column("memory.interfaces", d.memory.interfaces)
        clock, tdp = self.column("clock_ghz", d.clock_ghz), self.column("power_budget_w", d.power_budget_w)
        gb = self.column("memory.gb_per_interface", d.memory.gb_per_interface)
        core_kib: Num = 0.0
        shared_mib: Num = 0.0
        for level in d.sram:
            if level.scope == "core":
                core_kib = core_kib + self.column(
                    f"sram.{level.name}.capacity_kib", level.capacity_kib or 0.0
                )
            else:
                shared_mib = shared_mib + self.column(
                    f"sram.{level.name}.capacity_mib", level.capacity_mib or 0.0
                )
        up_base = self.base.get("scale_up")
        up: Num = 0.0
        if isinstance(up_base, Mapping):
            up = np.array([scale_up_gb_s(up_base, p) for p in self.points], dtype=np.float64)
        got = derived(macs, lanes, clock, interfaces, gb, interface_gb_s(rep.memory.type))
        x = replace(die_inputs(rep, s), macs=macs, cores=cores, lanes=lanes, core_sram_mib=cores * core_kib / 1024,
                    chip_sram_mib=shared_mib, interfaces=interfaces, link_gb_s=die_links_gb_s(rep, up))  # fmt: skip
        area = total_area(area_blocks(x, s))
        core_bytes, shared_bytes = core_kib * KIB, shared_mib * MIB
        core_mm, die_mm = distances_mm(rep.die_area_mm2 or e.reticle_mm2, rep.dies_per_package, cores)
        self._flop = (
            rep,
            rows,
            cols,
            core_mm,
            die_mm,
            np.where(core_bytes > 0, core_bytes, shared_bytes / cores),
        )
        power = {
            "compute_w": got["bf16_tflops"] * TERA * self.flop_pj("bf16") * PJ,
            "memory_w": got["bandwidth_gb_s"] * GB * dram_pj_per_byte(rep) * PJ,
            "idle_w": tdp * table().for_family(rep.family).idle_power_fraction,
            "budget_w": tdp,
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            parts = package_costs(area, x, got["capacity_gb"], rep.memory.type, s)
        made = parts["die_usd"] + parts["memory_usd"] + parts["package_usd"] + parts["test_usd"] + s.board_usd
        unit = made + nre_usd(rep, s) / self.volume
        metrics = {
            "die_area_mm2": area, "unit_cost_usd": unit,
            "power_w": power["compute_w"] + power["memory_w"] + power["idle_w"], "tdp_w": tdp,
            "memory_gb": got["capacity_gb"], "memory_bandwidth_gb_s": got["bandwidth_gb_s"],
            "bf16_tflops": got["bf16_tflops"] * TERA / 1e12,
            "sustained_clock": sustained_clock(tdp, power["idle_w"], power["memory_w"], power["compute_w"]),
            "tco_usd_per_hour": usd_per_hour(tco_parts(unit, tdp, self.tco)),
        }  # fmt: skip
        checks = {"dies_per_wafer": dies_per_wafer(area, s.wafer_diameter_mm), "sites": interfaces}
        return tuple(
            {k: np.broadcast_to(v, cores.shape) for k, v in f.items()} for f in (metrics, power, checks)
        )

    def flop_pj(self, precision: str) -> Floats:
        """`perf.energy.flop_pj` of every design of the group at `precision`."""
        got = self._pj.get(precision)
        if got is None:
            e = energy_table()
            assert self._flop is not None
            rep, rows, cols, core_mm, die_mm, local = self._flop
            x = replace(flop_inputs(rep, precision, e), rows=rows, cols=cols, core_mm=core_mm, die_mm=die_mm,
                        local_bytes=local)  # fmt: skip
            got = self._pj[precision] = np.broadcast_to(flop_total(flop_parts(x, e)), rows.shape)
        return got

    def joules(self, i: int, precision: str) -> float:
        """Joules of one matrix FLOP at `precision` on design i."""
        return float(self.flop_pj(precision)[i]) * PJ

    def _judge(self, i: int, p: Mapping[str, Value], figures: tuple[dict[str, Floats], ...],
               chips: dict[int, ChipSpec]) -> Silicon:  # fmt: skip
        """Design i's silicon: its metrics, the constraints and checks it fails, and its chip when
        it passes them (`figures`: `_figures`)."""
        metrics, power, checks = figures
        d = self.design
        problem = stack_problem(str(p.get("memory.type", d.memory.type)),
                                float(p.get("memory.gb_per_interface", d.memory.gb_per_interface)))  # fmt: skip
        area = float(metrics["die_area_mm2"][i])
        if not problem and checks["dies_per_wafer"][i] < 1:
            problem = wafer_problem(area)
        if problem:
            return Silicon(chip=None, metrics={}, reason=f"{d.id}: {problem}", violation=1.0)
        m = {k: float(v[i]) for k, v in metrics.items()}
        reason, violation = constraints(m, self.bounds)
        if reason:
            return Silicon(chip=None, metrics=m, reason=reason, violation=violation)
        watts = Power(**{k: float(v[i]) for k, v in power.items()})
        hbm = str(p.get("memory.type", d.memory.type)) in HBM_STACK_GB_S
        problem = design_problem(area, hbm, float(checks["sites"][i]), watts, silicon_data())
        if problem:
            return Silicon(chip=None, metrics=m, reason=f"{d.id}: {problem}", violation=1.0)
        try:
            chip = chips.get(i) or design_chip(self.base, p, self.origin)
        except TapeoutError as exc:
            return Silicon(chip=None, metrics={}, reason=str(exc), violation=1.0)
        return Silicon(chip=chip, metrics=m, joules_of=partial(self.joules, i))
