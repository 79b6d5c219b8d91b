"""A catalog chip as the base of a space: its published numbers at the base point, scaled by the
knobs.

A design file states choices and derives its peaks and memory from them; a catalog chip states
what was published (an H100's HBM3 runs at 670 GB/s a stack, not the 819 of the standard). So a
space over a catalog chip keeps every published number at the base point and moves it by the
knobs' ratios, the architecture otherwise unchanged:

- the matrix peaks by the matrix MACs times the clock (`num_cores`, `clock_ghz`,
  `matrix_unit.*`), the FP32 vector peak by lanes times cores times the clock;
- memory by stacks (`memory.interfaces`, each at the base's published rate per stack, times the
  standard rates' ratio when `memory.type` changes) and stack size (`memory.gb_per_interface`);
- the die's full complement (spare cores, memory sites, SRAM) in proportion, so the area model
  prices the variant's die; the published area, transistor count and prices no longer apply;
- `power_budget_w` is the TDP; SRAM levels, links and the node as a design file's.

The variant keeps the chip's family, so it runs with the efficiency figures of its vendor's
software.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tapeout.errors import TapeoutError
from tapeout.explore.knobs import KnobSpec, Value, known_knobs
from tapeout.hardware.design import HBM_STACK_GB, HBM_STACK_GB_S

HBM_ONLY = ("memory.interfaces", "memory.gb_per_interface", "memory.type")
NOT_PUBLISHED = ("die_area_mm2", "transistors_billion")  # the base's, not the variant's


def catalog_knobs(base: Mapping[str, Any]) -> dict[str, KnobSpec]:
    """The knobs a catalog chip takes: a design's, less the memory knobs of a chip without HBM
    stacks (its channels are not published) and the type knob outside HBM generations."""
    out = known_knobs(base)
    memory = base.get("memory") or {}
    if memory.get("type") not in HBM_STACK_GB_S or not memory.get("stacks"):
        for name in HBM_ONLY:
            out.pop(name, None)
    else:
        spec = out["memory.type"]
        out["memory.type"] = KnobSpec(
            kind="choice", known=tuple(t for t in spec.known if t in HBM_STACK_GB_S)
        )
    return out


def stack_gb(base: Mapping[str, Any]) -> float:
    """GB per HBM stack of a catalog chip."""
    memory = base["memory"]
    return float(memory["capacity_gb"]) / int(memory["stacks"])


def apply_catalog(base: Mapping[str, Any], knobs: Mapping[str, Value]) -> dict[str, Any]:
    """The catalog mapping of the variant of `base` the knobs make (`base` is untouched)."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    cores0, clock0 = int(base["num_cores"]), float(base["clock_ghz"])
    mu0 = base.get("matrix_unit") or {}
    die0 = base.get("die") or {}
    lanes0 = float(die0.get("fp32_lanes_per_core") or 0) or _lanes(base)
    cores, clock = int(knobs.get("num_cores", cores0)), float(knobs.get("clock_ghz", clock0))
    mu = {k: int(knobs.get(f"matrix_unit.{k}", mu0.get(k, 1))) for k in ("rows", "cols", "per_core")}
    lanes = float(knobs.get("vector_lanes_per_core", lanes0))
    macs0 = cores0 * mu0.get("rows", 1) * mu0.get("cols", 1) * mu0.get("per_core", 1)
    matrix = cores * mu["rows"] * mu["cols"] * mu["per_core"] * clock / (macs0 * clock0)
    vector = cores * clock * lanes / (cores0 * clock0 * lanes0)
    out.update(num_cores=cores, clock_ghz=clock, id=f"{base['id']}-variant", price=[])
    if mu0:
        out["matrix_unit"] = {**mu0, **mu}
    out["peak_tflops"] = {p: (v * (vector if p == "fp32" else matrix) if v else v)
                          for p, v in dict(base["peak_tflops"]).items()}  # fmt: skip
    if base.get("vector_fp32_tflops"):
        out["vector_fp32_tflops"] = float(base["vector_fp32_tflops"]) * vector
    _memory(out, base, knobs)
    _sram(out, base, knobs)
    _links(out, base, knobs)
    if "power_budget_w" in knobs:
        out["tdp_w"] = float(knobs["power_budget_w"])
    if "process_node" in knobs:
        out["process_node"], out["process"] = knobs["process_node"], f"TSMC {knobs['process_node']}"
    _die(out, base, cores / cores0, lanes)
    for field in NOT_PUBLISHED:
        out[field] = None
        out["sources"].pop(field, None)
    note = f"a variant of {base['id']} ({', '.join(f'{k} {v}' for k, v in knobs.items()) or 'as published'})"
    out["sources"] = {k: f"{v}; scaled for {note}" for k, v in out["sources"].items()}
    out["notes"] = [*base.get("notes", ()), f"Explored as {note}."]
    return out


def _lanes(base: Mapping[str, Any]) -> float:
    vector = float(base.get("vector_fp32_tflops") or base["peak_tflops"].get("fp32") or 0)
    if vector <= 0:
        raise TapeoutError(f"base {base['id']}: no FP32 vector peak to scale")
    return vector * 1e3 / (2 * int(base["num_cores"]) * float(base["clock_ghz"]))


def _memory(out: dict[str, Any], base: Mapping[str, Any], knobs: Mapping[str, Value]) -> None:
    m0 = base["memory"]
    if not any(k in knobs for k in HBM_ONLY):
        return
    stacks0 = int(m0["stacks"])
    stacks = int(knobs.get("memory.interfaces", stacks0))
    kind = str(knobs.get("memory.type", m0["type"]))
    per_stack = float(m0["bandwidth_gb_s"]) / stacks0 * HBM_STACK_GB_S[kind] / HBM_STACK_GB_S[m0["type"]]
    gb = float(knobs.get("memory.gb_per_interface", stack_gb(base)))
    if (kind != m0["type"] or "memory.gb_per_interface" in knobs) and gb not in HBM_STACK_GB[kind]:
        known = ", ".join(f"{g:g}" for g in HBM_STACK_GB[kind])
        raise TapeoutError(
            f"{base['id']} variant: field 'memory.gb_per_interface': {gb:g} GB is not a {kind} stack; "
            f"known: {known} (unit: GB)"
        )
    out["memory"] = {**m0, "type": kind, "stacks": stacks, "bandwidth_gb_s": per_stack * stacks,
                     "capacity_gb": gb * stacks}  # fmt: skip


def _sram(out: dict[str, Any], base: Mapping[str, Any], knobs: Mapping[str, Value]) -> None:
    levels = [dict(level) for level in base.get("sram") or ()]
    for name, v in knobs.items():
        head, _, rest = name.partition(".")
        if head == "sram":
            level, _, field = rest.partition(".")
            next(lv for lv in levels if lv.get("name") == level)[field] = v
    out["sram"] = levels


def _links(out: dict[str, Any], base: Mapping[str, Any], knobs: Mapping[str, Value]) -> None:
    if not base.get("scale_up"):
        return
    up0 = base["scale_up"]
    up = dict(up0)
    if "scale_up.links" in knobs:
        per_link = float(up0["bandwidth_per_direction_gb_s"]) / int(up0.get("links") or 1)
        up["links"] = knobs["scale_up.links"]
        up["bandwidth_per_direction_gb_s"] = per_link * float(knobs["scale_up.links"])
    if "scale_up.bandwidth_per_direction_gb_s" in knobs:
        up["bandwidth_per_direction_gb_s"] = knobs["scale_up.bandwidth_per_direction_gb_s"]
    out["scale_up"] = up


def _die(out: dict[str, Any], base: Mapping[str, Any], core_ratio: float, lanes: float) -> None:
    """The die's full complement in proportion to what the variant enables."""
    die0 = base.get("die")
    if not die0:
        return
    die = dict(die0)
    die["cores"] = max(int(out["num_cores"]), round(int(die0["cores"]) * core_ratio))
    if die0.get("fp32_lanes_per_core"):
        die["fp32_lanes_per_core"] = round(lanes)
    if "memory_interfaces" in die0 and base["memory"].get("stacks"):
        extra = int(die0["memory_interfaces"]) - int(base["memory"]["stacks"])  # fused-off sites
        die["memory_interfaces"] = int(out["memory"]["stacks"]) + max(0, extra)
    chip0 = sum(
        float(lv.get("capacity_mib", 0)) for lv in base.get("sram") or () if lv.get("scope") == "chip"
    )
    chip1 = sum(float(lv.get("capacity_mib", 0)) for lv in out["sram"] if lv.get("scope") == "chip")
    if die0.get("shared_sram_mib") and chip0:
        die["shared_sram_mib"] = float(die0["shared_sram_mib"]) * chip1 / chip0
    core0 = sum(
        float(lv.get("capacity_kib", 0)) for lv in base.get("sram") or () if lv.get("scope") == "core"
    )
    core1 = sum(float(lv.get("capacity_kib", 0)) for lv in out["sram"] if lv.get("scope") == "core")
    if die0.get("core_sram_kib") and core0:
        die["core_sram_kib"] = float(die0["core_sram_kib"]) * core1 / core0
    out["die"] = die
