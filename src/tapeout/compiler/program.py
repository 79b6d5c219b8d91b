"""The compiled program: an artifact that saves and loads as versioned JSON and prints as a
per-op table. It holds every node of the captured graph with the op it lowered to, the kernel it
was fused into, its tile, its time and what bounds it, how tensor parallelism splits it
(`placement`), the collective markers between the nodes, and the memory plan; `graph()` gives
the kernels and markers as the shared op graph, which the cost rules, the sharding
(`sharded(tp)`) and the simulators read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tapeout.checks import chips
from tapeout.compiler.passes import MemoryPlan
from tapeout.errors import TapeoutError
from tapeout.parallel.shard import Layout, shard
from tapeout.perf.matmul import Tiling
from tapeout.workloads.graph import Graph, Node, Phase, Split
from tapeout.workloads.ops import (
    AllGather,
    AllReduce,
    Attention,
    Collective,
    Copy,
    Elementwise,
    Gather,
    Matmul,
    Op,
    Reduce,
)

# Version 1 gained `split` and `unplaced` on steps and the marker steps, with defaults: a file
# written before them loads as a program placed nowhere (it shards as a whole).
SCHEMA = "tapeout-program/1"
OPS: dict[str, type[Op]] = {
    c.__name__: c for c in (Matmul, Attention, Elementwise, Reduce, Gather, Copy, AllReduce, AllGather)
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One node of the program. `op` is None for a free node (a view); a node with `fused_into`
    runs inside that kernel (its time is the kernel's); `flops` is what it adds to the program
    (zero for a product folded into a sibling's columns). `split`: how tensor parallelism divides
    its op; `unplaced`: why it stays whole on every rank, where the placement could not split it.
    A marker step (a one-rank collective: `tp.reduce`, `moe.reduce`, `tp.gather`) is no node of
    the captured graph: it marks where a sharded program combines partial sums or gathers."""

    name: str
    target: str
    op: Op | None
    shape: str
    precision: str
    fused_into: str | None
    tile: Tiling | None
    time_s: float
    bound: str
    flops: float
    bytes: float
    fallback: bool = False
    source: str = ""
    split: tuple[Split, ...] = ()
    unplaced: str = ""

    @property
    def kind(self) -> str:
        return self.op.kind.value if self.op is not None else "free"

    @property
    def marker(self) -> bool:
        return isinstance(self.op, Collective)

    @property
    def kernel(self) -> bool:
        """Runs as a kernel of its own."""
        return self.op is not None and self.fused_into is None and not self.marker


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    """A model compiled for one chip, at one size of its dynamic dimensions (`sizes`)."""

    target: str
    precision: str
    software: str
    phase: str  # "forward" or "backward"
    sizes: dict[str, int]
    steps: tuple[Step, ...]
    memory: MemoryPlan
    schedule: tuple[str, ...]  # the kernels in the order they run

    def kernels(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.kernel)

    def fallbacks(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.fallback)

    def unplaced(self) -> tuple[Step, ...]:
        """The steps tensor parallelism leaves whole on every rank, each with why."""
        return tuple(s for s in self.steps if s.unplaced)

    def graph(self, *, fused: bool = False) -> Graph:
        """The kernels and the markers as the shared op graph, with their splits (`fused`: every
        op that adds FLOPs, the ones fused into a kernel too, for counting)."""
        phase = Phase.BACKWARD if self.phase == "backward" else Phase.FORWARD
        steps = (
            s for s in self.steps if s.op is not None and (s.kernel or s.marker or (fused and s.flops > 0))
        )
        return Graph(tuple(Node(s.op, phase=phase, split=s.split) for s in steps if s.op is not None))

    def sharded(self, tp: int, *, sequence_parallel: bool = False, fused: bool = False) -> Graph:
        """What one of `tp` tensor-parallel chips runs (`parallel.shard` of `graph()`); each
        expert's FFN splits over the same chips.

        >>> mm = Matmul(m=64, n=128, k=256, name="up")
        >>> step = Step(name="up", target="aten.linear", op=mm, shape="64x128", precision="bf16",
        ...             fused_into=None, tile=None, time_s=0.0, bound="compute", flops=mm.flops,
        ...             bytes=0.0, split=(Split("tp", "n"),))
        >>> memory = MemoryPlan(weight_bytes=0, input_bytes=0, peak_activation_bytes=0, weights_in="hbm",
        ...                     capacity_bytes=1, sram_bytes=1, largest=())
        >>> p = Program(target="h100-sxm", precision="bf16", software="", phase="forward", sizes={},
        ...             steps=(step,), memory=memory, schedule=("up",))
        >>> p.sharded(4).nodes[0].op.n
        32
        """
        chips(tp, "tp")
        for s in self.steps:
            if isinstance(s.op, Attention) and any(x.dim == "heads" for x in s.split) and s.op.heads % tp:
                raise TapeoutError(
                    f"field 'tp': {tp} does not divide the {s.op.heads} attention heads of {s.name}"
                )
        return shard(self.graph(fused=fused), Layout(tp=tp, etp=tp, sequence_parallel=sequence_parallel))

    def coverage(self) -> dict[str, str]:
        """Every ATen op of the captured graph and what it lowered to ("free", an op kind, or
        "fallback")."""
        out: dict[str, str] = {}
        for s in self.steps:
            if not s.marker:
                out.setdefault(s.target, "fallback" if s.fallback else s.kind)
        return dict(sorted(out.items()))

    def table(self, *, kernels_only: bool = False) -> str:
        """The per-op table: op, kind, shape, precision, fused into, tile (a matrix product's output
        tile, split-K ways and waves over the cores), time, bound, fallback, and what tensor
        parallelism splits (`tp.n`: its columns; `(16,4,4)`: by head groups; `whole`: unplaced)."""
        rows = [("op", "kind", "shape", "precision", "fused into", "tile", "time (us)", "bound", "fallback",
                 "split")]  # fmt: skip
        for s in self.steps:
            if s.op is None or (kernels_only and not s.kernel):
                continue
            time = f"{s.time_s * 1e6:.3f}" if s.kernel else "-"
            t = s.tile
            tile = f"{t.m}x{t.n}{f'/k{t.k_split}' if t.k_split > 1 else ''} x{t.waves}" if t else "-"
            rows.append((s.name, s.kind, s.shape, s.precision, s.fused_into or "-", tile, time, s.bound,
                         "host" if s.fallback else "-", _split_text(s)))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "target": self.target, "precision": self.precision, "software": self.software,
            "phase": self.phase, "sizes": self.sizes, "memory": self.memory.as_dict(),
            "schedule": list(self.schedule), "steps": [_step_json(s) for s in self.steps],
        }  # fmt: skip

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Program:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TapeoutError(f"{path}: not a program file ({exc})") from exc
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: Any, origin: str = "program") -> Program:
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise TapeoutError(
                f"{origin}: field 'schema': {schema!r} is not {SCHEMA!r}; this version reads only that"
            )
        try:
            mem = data["memory"]
            memory = MemoryPlan(**{**mem, "largest": tuple((str(k), float(v)) for k, v in mem["largest"])})
            steps = tuple(_step_of(s) for s in data["steps"])
            return cls(target=data["target"], precision=data["precision"], software=data["software"],
                       phase=data["phase"], sizes=dict(data["sizes"]), steps=steps, memory=memory,
                       schedule=tuple(data["schedule"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise TapeoutError(f"{origin}: malformed program ({type(exc).__name__}: {exc})") from exc


def _op_json(op: Op | None) -> dict[str, Any] | None:
    if op is None:
        return None
    return {"type": type(op).__name__, **{f.name: getattr(op, f.name) for f in fields(op)}}


def _step_json(s: Step) -> dict[str, Any]:
    out = {f.name: getattr(s, f.name) for f in fields(s)}
    out["op"] = _op_json(s.op)
    out["tile"] = asdict(s.tile) if s.tile else None
    out["split"] = [asdict(x) for x in s.split]
    return out


def _split_text(s: Step) -> str:
    if s.unplaced:
        return "whole"
    return (
        ",".join(f"{x.axis}.{x.dim}{str(x.packed).replace(' ', '') if x.packed else ''}" for x in s.split)
        or "-"
    )


def _step_of(d: dict[str, Any]) -> Step:
    op_data = d.get("op")
    op: Op | None = None
    if op_data is not None:
        kind = op_data.pop("type")
        if kind not in OPS:
            raise TapeoutError(f"program: field 'op.type': unknown op {kind!r}; known: {', '.join(OPS)}")
        op = OPS[kind](**op_data)
    tile = Tiling(**d["tile"]) if d.get("tile") else None
    split = tuple(Split(**{**x, "packed": tuple(x.get("packed", ()))}) for x in d.get("split", ()))
    return Step(**{**d, "op": op, "tile": tile, "split": split})
