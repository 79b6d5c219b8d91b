"""From a captured graph to a `Program` for one chip: lower, fuse, place for tensor parallelism,
tile, plan memory, schedule, and time each kernel with the cost rules (`perf.rules.op_cost`) on
the chip's `System` under its software profile."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.compiler.lower import Context, Lowered, lower
from tapeout.compiler.passes import Fusion, fuse, plan_memory, tile
from tapeout.compiler.placement import Placement, place
from tapeout.compiler.program import Program, Step
from tapeout.errors import TapeoutError, unknown_id
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.matmul import Tiling
from tapeout.perf.rules import op_cost
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT, Numerics, at_least_16
from tapeout.workloads.ops import AllGather, AllReduce, Matmul, Op

PRECISIONS = ("fp32", "bf16", "fp8", "int8")


def get_target(target: str | ChipSpec) -> ChipSpec:
    """A catalog chip or one of our designs, by exact id; an unknown id lists the known ones."""
    if isinstance(target, ChipSpec):
        return target
    from tapeout.hardware import chip_ids, get_chip

    if target not in chip_ids():
        raise unknown_id("target", target, chip_ids())
    return get_chip(target)


def numerics_for(chip: ChipSpec, precision: str, *, training: bool) -> Numerics:
    """The formats a program runs in: matrix inputs in `precision`, the rest in 16 bits at least;
    a format the chip has no matrix units for is refused, naming the ones it has."""
    if precision not in PRECISIONS:
        raise TapeoutError(
            f"field 'precision': unknown precision {precision!r}; known: {', '.join(PRECISIONS)}"
        )
    chip.require_formats({"precision": precision})
    if precision == "fp32":
        return Numerics.training("fp32")
    if training:
        return Numerics.training(precision)  # type: ignore[arg-type]
    return Numerics.serving(weights=precision, activations=precision, kv=at_least_16(precision))  # type: ignore[arg-type]


def system_of(chip: ChipSpec, software: str | None, training: bool, chips: int = 1) -> tuple[System, str]:
    """`chips` of `chip` (the tensor-parallel group a sharded program runs on) under `software`."""
    from tapeout.api import system_for

    system, profile = system_for(chip, chips, software, "training" if training else "serving")
    if training:
        system = dataclasses.replace(system, load="training")
    return system, str(profile)


def build(
    gm: torch.fx.GraphModule, chip: ChipSpec, *, precision: str, software: str | None = None,
    sizes: Mapping[Any, int] | None = None, named_sizes: Mapping[str, int] | None = None,
    phase: str = "forward", training: bool = False, weight_inputs: frozenset[int] = frozenset(),
) -> Program:  # fmt: skip
    """The program of `gm` on `chip`, at the dynamic `sizes` (symbol -> size). `weight_inputs`:
    the positions of inputs that are the model's parameters (a training graph of AOT autograd
    takes them as inputs), held as weights in the memory plan."""
    numerics = numerics_for(chip, precision, training=training)
    nodes = lower(gm, numerics, sizes or {})
    fusion = fuse(nodes)
    ctx = Context(gm, numerics, sizes or {})
    weights = _weights(gm, numerics)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    stored = BYTES_PER_ELEMENT[numerics.stored]
    for i in sorted(weight_inputs):
        val = placeholders[i].meta.get("val") if i < len(placeholders) else None
        if isinstance(val, torch.Tensor):
            weights[placeholders[i].name] = val.numel() * (
                stored if val.is_floating_point() else val.element_size()
            )
    inputs = {n.name: ctx.nbytes(n) for n in placeholders if n.name not in weights}
    outputs = [a.name for a in gm.graph.output_node().all_input_nodes]
    memory = plan_memory(nodes, fusion, weights, inputs, outputs, chip)
    system, profile = system_of(chip, software, training)
    held = {placeholders[i].name for i in weight_inputs if i < len(placeholders)}
    placed = place(gm, nodes, fusion, ctx, held)
    steps = tuple(
        s for n in nodes for s in (*_markers(n.name, placed, ctx), _step(n, fusion, system, chip, placed))
    ) + tuple(_markers("output", placed, ctx))
    schedule = tuple(s.name for s in steps if s.kernel)
    return Program(target=chip.id, precision=precision, software=profile, phase=phase,
                   sizes=dict(named_sizes or {}), steps=steps, memory=memory, schedule=schedule)  # fmt: skip


def _weights(gm: torch.fx.GraphModule, numerics: Numerics) -> dict[str, float]:
    """Bytes of each parameter and buffer: floating point in the stored format, others as they are."""
    out: dict[str, float] = {}
    for name, t in itertools.chain(gm.named_parameters(), gm.named_buffers()):
        width = BYTES_PER_ELEMENT[numerics.stored] if t.is_floating_point() else t.element_size()
        out[name] = t.numel() * width
    return out


def _markers(before: str, placed: Placement, ctx: Context) -> list[Step]:
    """The marker steps the placement put before node `before` (`output`: at the end)."""
    out = []
    for m in placed.markers:
        if m.before == before:
            kind = AllReduce if m.name.endswith("reduce") else AllGather
            op = kind(ranks=1, bytes_per_rank=m.bytes, name=m.name)
            out.append(Step(name=f"{m.name}.{m.of}", target=m.name, op=op, shape="-", precision=ctx.numerics.stream,
                            fused_into=None, tile=None, time_s=0.0, bound="marker", flops=0.0, bytes=0.0,
                            split=m.split))  # fmt: skip
    return out


def _step(n: Lowered, fusion: Fusion, system: System, chip: ChipSpec, placed: Placement) -> Step:
    step = _timed(n, fusion, system, chip)
    split, why = placed.splits.get(n.name, ()), placed.unplaced.get(n.name, "")
    return dataclasses.replace(step, split=split, unplaced=why) if split or why else step


def _timed(n: Lowered, fusion: Fusion, system: System, chip: ChipSpec) -> Step:
    op: Op | None = fusion.ops.get(n.name, n.op)
    into = fusion.fused_into.get(n.name)
    flops = 0.0 if n.name in fusion.merged or op is None else op.flops
    t: Tiling | None = None
    if op is None:
        return Step(name=n.name, target=n.target, op=None, shape=n.shape, precision="-", fused_into=None,
                    tile=None, time_s=0.0, bound="-", flops=0.0, bytes=0.0, source=n.source)  # fmt: skip
    if n.folded:
        return Step(name=n.name, target=n.target, op=op, shape=n.shape, precision=_precision(op),
                    fused_into="constant", tile=None, time_s=0.0, bound="folded", flops=0.0, bytes=0.0,
                    source=n.source)  # fmt: skip
    if into is not None:
        return Step(name=n.name, target=n.target, op=op, shape=n.shape, precision=_precision(op), fused_into=into,
                    tile=None, time_s=0.0, bound="fused", flops=flops, bytes=0.0, source=n.source)  # fmt: skip
    cost = op_cost(op, system)
    if isinstance(op, Matmul):
        t = tile(op, system)
    if not math.isfinite(cost.time_s):
        raise TapeoutError(f"op {n.name} ({n.target}): no finite time on {chip.id}")
    return Step(name=n.name, target=n.target, op=op, shape=n.shape, precision=_precision(op), fused_into=None,
                tile=t, time_s=cost.time_s, bound=cost.bound, flops=flops, bytes=cost.dram_bytes,
                fallback=n.fallback, source=n.source)  # fmt: skip


def _precision(op: Op) -> str:
    return str(getattr(op, "precision", "-"))
