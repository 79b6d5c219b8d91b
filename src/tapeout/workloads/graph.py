"""The op graph: what a workload runs, as ops with a count and a phase, and the tensors that stay
live across it.

The analytic builders (`workloads.transformer`, `workloads.recsys_graph`) and captured programs
produce this one type; `parallel.shard` turns it into what one chip runs, `perf.graph_cost`
costs it, the simulators compose the costs in time, and `parallel.memory` sizes its tensors.

A node may state how a mesh axis divides it (`Split`): the op field the axis cuts (a matmul's
`n` under tensor parallelism, an attention's `heads`, an expert grouped GEMM's `groups` under
expert parallelism). Collectives appear in an unsharded graph with one rank, where they move
nothing; they mark where a sharded graph must combine partial sums or exchange tokens, and
`shard` gives them their ranks from the plan.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, fields
from typing import Literal

from tapeout.precision import BYTES_PER_ELEMENT, Precision
from tapeout.workloads.moe import Routing
from tapeout.workloads.ops import Op, OpKind, rebuild


class Phase(enum.Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    RECOMPUTE = "recompute"  # a forward run again before its backward
    OPTIMIZER = "optimizer"
    PREFILL = "prefill"
    DECODE = "decode"
    EMBEDDING = "embedding"
    HEAD = "head"


class Role(enum.Enum):
    """What a live tensor holds, for the memory model."""

    WEIGHT = "weight"
    INPUT = "input"  # a layer's input: the one activation full recomputation keeps
    ACTIVATION = "activation"  # kept by the forward for the backward
    SCORES = "scores"  # attention score matrices kept by unfused attention (selective recompute drops them)
    KV_CACHE = "kv_cache"  # per token of context
    WORKSPACE = "workspace"  # transient buffers of one layer's pass, per token


# An op field and the dynamic dimensions whose product scales it.
Dims = tuple[tuple[str, tuple[str, ...]], ...]
# Mesh axes a plan maps onto ops: tensor, sequence (the tensor-parallel ranks splitting tokens),
# context, expert parallelism, the ways one expert's FFN splits, the ranks that sum the experts'
# partial outputs, data parallelism, and a recommendation model's embedding tables (the share of
# table `index` a chip serves) and their rows cached on chip.
Axis = Literal["tp", "sp", "cp", "ep", "etp", "moe", "dp", "table", "hot"]


@dataclass(frozen=True, slots=True)
class Split:
    """Mesh axis `axis` divides field `dim` of an op (or `elements` of a tensor).

    `packed` says the dim holds whole heads, in groups of these many heads of equal width (a
    fused query-key-value projection: query, key and value heads); a split keeps at least one
    head of each group on every rank, so key/value heads are rounded up.
    """

    axis: Axis
    dim: str
    packed: tuple[int, ...] = ()
    index: int = 0

    def divide(self, value: float, ways: int) -> float:
        """`value` on one of `ways` ranks (whole dims divide whole: 14336 // 8 columns).

        >>> Split("tp", "n", (64, 8, 8)).divide(80 * 128, 16), Split("tp", "n").divide(100, 8)
        (768, 12)
        """
        if ways == 1:
            return value
        if self.packed:
            total = sum(self.packed)
            width = value // total if isinstance(value, int) else value / total
            return width * sum(-(-heads // ways) for heads in self.packed)
        return value // ways if isinstance(value, int) else value / ways


@dataclass(frozen=True, slots=True)
class Node:
    """One op of a graph: it runs `count` times (layers, micro-batches; a fraction where a rank
    runs that share of it) in `phase`. `routed` marks an expert op whose rows and groups follow
    the routing of tokens to experts. `grad` gives the ops of its backward where the general rule
    (`workloads.autodiff`) does not hold. `dims` names the op fields that scale with the graph's
    dynamic dimensions (`tokens` of a layer; `batch`, `q` and `kv` of an attention call), each
    with the dimensions whose product scales it: a graph lowered with every dimension at one is
    instantiated for any sizes by `Graph.at`."""

    op: Op
    _: KW_ONLY
    count: float = 1.0
    phase: Phase = Phase.FORWARD
    split: tuple[Split, ...] = ()
    routed: Routing | None = None
    grad: tuple[Op, ...] | None = None
    dims: Dims = ()

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def flops(self) -> float:
        return self.op.flops * self.count

    def op_at(self, sizes: Mapping[str, int]) -> Op:
        """The op with its dynamic dimensions `sizes` times what it was lowered for."""
        r = self.routed
        if r is not None and "tokens" in sizes:
            dim = next((s.dim for s in self.split if s.axis == "ep"), "m")
            return r.place(self.op, dim, r.tokens * sizes["tokens"] * r.reach, r.local or r.experts)
        if not self.dims:
            return self.op
        changes = {}
        for field, names in self.dims:
            factor = 1
            for n in names:
                factor *= sizes.get(n, 1)
            if factor != 1:
                changes[field] = getattr(self.op, field) * factor
        return rebuild(self.op, **changes) if changes else self.op

    def at(self, sizes: Mapping[str, int]) -> Node:
        """This node with its dynamic dimensions at `sizes` (see `op_at`)."""
        op = self.op_at(sizes)
        if op is self.op:
            return self
        r = self.routed
        if r is not None and "tokens" in sizes:
            return Node(op, count=self.count, phase=self.phase, split=self.split,
                        routed=rebuild(r, tokens=r.tokens * sizes["tokens"]), grad=self.grad)  # fmt: skip
        return Node(op, count=self.count, phase=self.phase, split=self.split, grad=self.grad, dims=self.dims)


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor that stays live: `count` of `elements` values in `precision`."""

    name: str
    elements: float
    precision: Precision
    role: Role
    split: tuple[Split, ...] = ()
    count: float = 1.0
    dims: tuple[str, ...] = ()  # the dynamic dimensions whose product scales its elements

    @property
    def bytes(self) -> float:
        return self.elements * BYTES_PER_ELEMENT[self.precision] * self.count

    def at(self, sizes: Mapping[str, int]) -> Tensor:
        factor = 1
        for n in self.dims:
            factor *= sizes.get(n, 1)
        return rebuild(self, elements=self.elements * factor) if factor != 1 else self


@dataclass(frozen=True, slots=True)
class Graph:
    """Ops in the order they run, and the live tensors. Frozen and hashable (costs are cached by
    graph); `+` joins graphs, `n * graph` repeats one (layers, micro-batches).

    >>> from tapeout.workloads.ops import Matmul
    >>> g = 2 * Graph((Node(Matmul(m=8, n=8, k=8, name="mm")),))
    >>> g.flops == 2 * 2 * 8**3, g.nodes[0].count
    (True, 2.0)
    """

    nodes: tuple[Node, ...] = ()
    live: tuple[Tensor, ...] = ()

    def __add__(self, other: Graph) -> Graph:
        return Graph(self.nodes + other.nodes, self.live + other.live)

    def __mul__(self, times: float) -> Graph:
        return Graph(
            tuple(rebuild(n, count=n.count * times) for n in self.nodes),
            tuple(rebuild(t, count=t.count * times) for t in self.live),
        )

    __rmul__ = __mul__

    @classmethod
    def join(cls, graphs: Iterable[Graph]) -> Graph:
        nodes: list[Node] = []
        live: list[Tensor] = []
        for g in graphs:
            nodes.extend(g.nodes)
            live.extend(g.live)
        return cls(tuple(nodes), tuple(live))

    def at(self, **sizes: int) -> Graph:
        """The graph with its dynamic dimensions at `sizes` (see `Node.dims`). A sharded graph
        instantiates exactly when its plan splits no dynamic dimension (no sequence parallelism).

        >>> from tapeout.workloads.ops import Matmul
        >>> g = Graph((Node(Matmul(m=1, n=8, k=8), dims=(("m", ("tokens",)),)),))
        >>> g.at(tokens=512).nodes[0].op.m
        512
        """
        if all(v == 1 for v in sizes.values()):
            return self
        return Graph(tuple(n.at(sizes) for n in self.nodes), tuple(t.at(sizes) for t in self.live))

    def ops(self) -> Graph:
        """The nodes alone, without the live tensors (what costing needs)."""
        return Graph(self.nodes)

    def select(self, *phases: Phase) -> Graph:
        """The nodes of these phases (all live tensors kept)."""
        return Graph(tuple(n for n in self.nodes if n.phase in phases), self.live)

    def compute(self) -> Graph:
        """The nodes that run on the chip itself (no collectives)."""
        return Graph(tuple(n for n in self.nodes if not _is_collective(n.op)), self.live)

    def communication(self) -> Graph:
        """The collectives."""
        return Graph(tuple(n for n in self.nodes if _is_collective(n.op)), ())

    def with_phase(self, phase: Phase) -> Graph:
        return Graph(tuple(rebuild(n, phase=phase) for n in self.nodes), self.live)

    @property
    def flops(self) -> float:
        return sum(n.flops for n in self.nodes)

    def matmul_flops(self) -> float:
        return sum(n.flops for n in self.nodes if n.op.kind == OpKind.MATMUL)

    def weight_params(self) -> float:
        """Parameters of the weight tensors."""
        return sum(t.elements * t.count for t in self.live if t.role == Role.WEIGHT)

    def bytes_of(self, role: Role) -> float:
        return sum(t.bytes for t in self.live if t.role == role)

    def table(self) -> str:
        """The graph as a text table: one row per node, then the live tensors."""
        rows = [("phase", "name", "kind", "shape", "count", "GFLOP")]
        for n in self.nodes:
            shape = ", ".join(
                f"{f.name}={_short(getattr(n.op, f.name))}" for f in fields(n.op) if f.name != "name"
            )
            rows.append(
                (n.phase.value, n.name, n.op.kind.value, shape, f"{n.count:g}", f"{n.flops / 1e9:.4g}")
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        for t in self.live:
            lines.append(f"live {t.role.value} {t.name}: {t.count:g} x {_short(t.elements)} {t.precision}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _is_collective(op: Op) -> bool:
    return op.kind in COLLECTIVE_KINDS


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


COLLECTIVE_KINDS = frozenset(
    {OpKind.ALL_REDUCE, OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_TO_ALL, OpKind.SEND_RECV}
)
