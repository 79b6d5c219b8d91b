"""Passes over a lowered graph for one chip: fusion, tiling, a memory plan and a schedule.

- Fusion: a pointwise op joins the kernel of its latest producer (a matrix product's epilogue, a
  norm's or softmax's tail, a chain of pointwise maps) when it writes no more elements than that
  kernel; matrix products that read the same activation with the same rows and depth become one
  product with their columns side by side (query, key and value; gate and up projections).
- Tiling: each matrix product runs the tiling the matmul cost rule chooses on the target
  (`perf.matmul.matmul_tiling`: tiles in multiples of the matrix unit whose double-buffered
  panels fit a core's SRAM, split-K for small products, waves over the cores), so a kernel's
  time is that of its tiles and one rule decides both.
- Memory: activations live from the op that writes them to the last that reads them (through
  views); the peak is the most bytes live at once. Weights stay in SRAM when they fit beside that
  peak, else in HBM; what does not fit in HBM is named.
- Schedule: kernels in the graph's topological order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapeout.errors import DoesNotFit
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.matmul import Tiling, matmul_tiling
from tapeout.perf.system import System
from tapeout.units import GB, MIB
from tapeout.workloads.ops import Elementwise, Matmul, Op, OpKind, Reduce, rebuild

if TYPE_CHECKING:  # the lowering imports torch; a saved program is read without it
    from tapeout.compiler.lower import Lowered

FUSES_INTO = (OpKind.MATMUL, OpKind.ELEMENTWISE, OpKind.REDUCE)


@dataclass(frozen=True, slots=True)
class Fusion:
    """Which kernel each fused node runs in, and the ops that merging rewrote."""

    fused_into: Mapping[str, str]
    ops: Mapping[str, Op]
    merged: frozenset[str]  # matrix products folded into a sibling's columns


def roots(nodes: Sequence[Lowered]) -> dict[str, str | None]:
    """Each node's storage: the op node whose output it is or views (None: a constant)."""
    out: dict[str, str | None] = {}
    for n in nodes:
        if n.op is not None and not n.folded:
            out[n.name] = n.name
        else:
            out[n.name] = next((out[i] for i in n.inputs if out.get(i)), None)
    return out


def fuse(nodes: Sequence[Lowered]) -> Fusion:
    root = roots(nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    fused: dict[str, str] = {n.name: n.fused_into for n in nodes if n.fused_into}
    ops: dict[str, Op] = {}
    merged: set[str] = set()
    anchor: dict[str, str] = {}  # op node -> the kernel it runs in
    siblings: dict[tuple[str, int, int, str], str] = {}
    for n in nodes:
        if n.op is None or n.name in fused or n.folded:
            continue
        op = n.op
        anchor[n.name] = n.name
        producers = [r for i in n.inputs if (r := root.get(i)) and r in anchor]
        if n.fallback:
            continue
        if isinstance(op, Elementwise):
            into = _epilogue_target(op, producers, anchor, ops, nodes, index)
            if into is not None:
                fused[n.name] = anchor[n.name] = into
        elif isinstance(op, Matmul) and op.weight_precision is not None and op.groups == 1 and producers:
            key = (producers[0], op.m, op.k, op.precision)
            first = siblings.setdefault(key, n.name)
            if first != n.name:
                base = ops.get(first, nodes[index[first]].op)
                assert isinstance(base, Matmul)
                ops[first] = rebuild(base, n=base.n + op.n)
                fused[n.name] = anchor[n.name] = first
                merged.add(n.name)
    return Fusion(fused, ops, frozenset(merged))


def _epilogue_target(
    op: Elementwise, producers: list[str], anchor: Mapping[str, str], ops: Mapping[str, Op],
    nodes: Sequence[Lowered], index: Mapping[str, int],
) -> str | None:  # fmt: skip
    """The kernel a pointwise op joins: its latest producer's, if that kernel writes at least as
    many elements."""
    for p in sorted(set(producers), key=index.__getitem__, reverse=True):
        kernel = anchor[p]
        base = ops.get(kernel) or nodes[index[kernel]].op
        if base is None or base.kind not in FUSES_INTO:
            continue
        if _elements(base) >= op.elements:
            return kernel
        return None
    return None


def _elements(op: Op) -> float:
    if isinstance(op, Matmul):
        return float(op.m * op.n * op.groups)
    if isinstance(op, Reduce):
        return float(op.rows * op.cols)
    if isinstance(op, Elementwise):
        return op.elements
    return 0.0


# ---- tiling ----------------------------------------------------------------------------------
def tile(op: Matmul, system: System) -> Tiling:
    """The tiling the matmul cost rule times `op` with on the target (`perf.matmul`): the output
    tile, split-K, tile count and waves the program's kernel runs, so the time is the tiles'."""
    return matmul_tiling(op, system)


# ---- memory ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPlan:
    weight_bytes: float
    input_bytes: float
    peak_activation_bytes: float
    weights_in: str  # "sram" or "hbm"
    capacity_bytes: float
    sram_bytes: float
    largest: tuple[tuple[str, float], ...]  # the biggest tensors live at the peak

    def as_dict(self) -> dict[str, object]:
        return {
            "weight_bytes": self.weight_bytes, "input_bytes": self.input_bytes,
            "peak_activation_bytes": self.peak_activation_bytes, "weights_in": self.weights_in,
            "capacity_bytes": self.capacity_bytes, "sram_bytes": self.sram_bytes,
            "largest": [list(x) for x in self.largest],
        }  # fmt: skip


def plan_memory(
    nodes: Sequence[Lowered], fusion: Fusion, weights: Mapping[str, float], inputs: Mapping[str, float],
    outputs: Sequence[str], chip: ChipSpec,
) -> MemoryPlan:  # fmt: skip
    """Liveness of every materialised activation; raises DoesNotFit when weights, inputs and the
    activation peak exceed the chip's memory."""
    root = roots(nodes)
    kernel = {n.name: fusion.fused_into.get(n.name, n.name) for n in nodes}
    last: dict[str, int] = {}
    outside: set[str] = set()  # outputs read by another kernel
    for i, n in enumerate(nodes):
        for src in n.inputs:
            r = root.get(src)
            if r is not None:
                last[r] = i
                if kernel[n.name] != kernel[r]:
                    outside.add(r)
    end = len(nodes)
    for out in outputs:
        r = root.get(out)
        if r is not None:
            last[r] = end
    starts: dict[int, list[str]] = {}
    size: dict[str, float] = {}
    for i, n in enumerate(nodes):
        if n.op is None or n.name not in last:
            continue
        if n.name in fusion.fused_into and n.name not in outside and last[n.name] < end:
            continue  # stays on chip inside its kernel
        starts.setdefault(i, []).append(n.name)
        size[n.name] = n.out_bytes
    live: dict[str, float] = {}
    peak, at_peak = 0.0, {}
    for i in range(end + 1):
        for name in starts.get(i, ()):
            live[name] = size[name]
        total = sum(live.values())
        if total > peak:
            peak, at_peak = total, dict(live)
        for name in [x for x in live if last[x] == i]:
            del live[name]
    return _fit(chip, weights, inputs, peak, at_peak)


def _fit(
    chip: ChipSpec, weights: Mapping[str, float], inputs: Mapping[str, float], peak: float, at_peak: Mapping[str, float]
) -> MemoryPlan:  # fmt: skip
    capacity = chip.memory.capacity_gb * GB
    sram = chip.sram_shared_bytes + chip.sram_per_core_bytes * chip.num_cores
    w, x = sum(weights.values()), sum(inputs.values())
    tensors = sorted(
        {**weights, **{f"activation {k}": v for k, v in at_peak.items()}}.items(), key=lambda kv: -kv[1]
    )
    largest = tuple((k, float(v)) for k, v in tensors[:5])
    if w + x + peak > capacity:
        names = ", ".join(f"{k} ({v / MIB:,.1f} MiB)" for k, v in largest)
        raise DoesNotFit(
            f"the program needs {(w + x + peak) / GB:,.2f} GB ({w / GB:,.2f} GB of weights, {x / GB:,.2f} GB "
            f"of inputs, {peak / GB:,.2f} GB of activations at the peak) but {chip.id} has "
            f"{capacity / GB:,.1f} GB: {(w + x + peak - capacity) / GB:,.2f} GB over; largest: {names}"
        )
    return MemoryPlan(weight_bytes=w, input_bytes=x, peak_activation_bytes=peak,
                      weights_in="sram" if w + peak <= sram else "hbm", capacity_bytes=capacity,
                      sram_bytes=sram, largest=largest)  # fmt: skip
