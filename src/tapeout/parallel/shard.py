"""`shard(graph, plan)`: what one chip runs, from a graph and a plan.

A plan maps mesh axes onto the splits a graph's nodes declare (`workloads.graph.Split`), as
torchtitan's placements do; the collectives follow from the graph's markers:
- `tp.reduce` (partial sums of a split matmul meet): an all-reduce over the tensor-parallel
  ranks, or a reduce-scatter when sequence parallelism keeps the stream split by tokens;
- `tp.gather` (a sharded stream must be whole): nothing, or an all-gather under sequence
  parallelism. Sequence parallelism is one flag that changes these two, not a second path;
- `tp.allgather` (a value split across the ranks must be whole, e.g. for an op a captured
  program cannot split): an all-gather over the tensor-parallel ranks under any layout;
- `moe.reduce`: the experts' partial sums, over the ranks one expert's FFN spans (or the whole
  tensor-parallel group when the experts share its tokens);
- `ep.dispatch` and `ep.combine`: an all-to-all among the expert-parallel ranks when they hold
  different tokens, each with the sort of the tokens it moves (by local expert on arrival, by
  source rank before the return); nothing when they share their tokens;
- a recommendation model's exchange of pooled vectors: an all-to-all among the chips unless
  every chip holds every table.
Expert ops follow their routing (`workloads.moe`): the step waits for the busiest
expert-parallel rank, which runs the experts it holds that receive tokens with the rows the most
loaded rank gets from every token group that reaches them, and whose dispatch and combine move
that rank's payload (the mean times the routing's imbalance). Embedding lookups follow the
tables' placement: a chip serves its share of each table, and the lookups of all the tables it serves with one row
width run as one table-batched kernel (FBGEMM's TBE, HugeCTR's embedding collection). Under context parallelism each rank runs its
share of the core attention, with the key/value blocks passed around the ring (`cp.ring`,
twice in the backward: keys and values, then their gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tapeout.precision import BYTES_PER_ELEMENT
from tapeout.workloads.graph import Axis, Graph, Node, Split, Tensor
from tapeout.workloads.moe import Routing
from tapeout.workloads.ops import (
    AllGather,
    AllReduce,
    AllToAll,
    Attention,
    Collective,
    Copy,
    Gather,
    Matmul,
    Op,
    ReduceScatter,
    SendRecv,
    rebuild,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """How a plan maps the mesh axes onto a graph.

    `etp`: the ways one expert's FFN splits; `exchange`: the expert-parallel ranks hold different
    tokens (so dispatch and combine move them); `token_groups`: the token sets that reach one
    rank's experts. `dp`: the data-parallel ways of a whole-system graph; `tables`: the share of
    each embedding table's lookups the chip serves; `hot`: the share served from on-chip SRAM;
    `table_ranks`: the chips that exchange pooled embeddings.
    """

    tp: int = 1
    sequence_parallel: bool = False
    cp: int = 1
    ep: int = 1
    etp: int = 1
    exchange: bool = False
    token_groups: int = 1
    dp: int = 1
    tables: tuple[float, ...] = ()
    hot: tuple[float, ...] = ()
    table_ranks: int = 1

    def ranks(self, axis: Axis) -> int:
        """How many ways `axis` divides.

        >>> Layout(tp=8, sequence_parallel=True).ranks("sp")
        8
        """
        if axis == "tp":
            return self.tp
        if axis == "sp":
            return self.tp if self.sequence_parallel else 1
        if axis == "cp":
            return self.cp
        if axis == "ep":
            return self.ep
        if axis == "etp":
            return self.etp
        if axis == "dp":
            return self.dp
        if axis == "table":
            return self.table_ranks
        return self.etp if self.exchange else self.tp  # "moe": the ranks the experts' partials span


class Plan(Protocol):
    @property
    def layout(self) -> Layout: ...


def shard(graph: Graph, plan: Plan | Layout) -> Graph:
    """The graph one chip runs under `plan`, with the collectives the plan needs.

    >>> from tapeout.precision import Numerics
    >>> from tapeout.workloads.models import get_model
    >>> from tapeout.workloads.transformer import layer
    >>> g = layer(get_model("llama-3.1-70b").config, 4096, Numerics.training("bf16"), moe=False)
    >>> one = shard(g, Layout(tp=8))
    >>> round(g.matmul_flops() / one.matmul_flops(), 3), [n.name for n in one.communication().nodes]
    (8.0, ['tp.reduce', 'tp.reduce'])
    """
    layout = plan if isinstance(plan, Layout) else plan.layout
    nodes: list[Node | _Batch] = []
    batches: dict[tuple[object, ...], _Batch] = {}
    for node in graph.nodes:
        op = node.op
        if isinstance(op, Gather) and any(s.axis == "table" for s in node.split):
            sized = _changes(op, node.split, layout)
            lookups = sized.get("lookups", op.lookups)
            if lookups <= 0:
                continue
            key = (node.phase, op.name, op.dim, op.precision)  # one kernel per row width
            batch = batches.get(key)
            if batch is None:  # at the place of the first table of its width
                batch = batches[key] = _Batch(node)
                nodes.append(batch)
            batch.add(lookups, sized.get("outputs", op.outputs), sized.get("cached", op.cached))
            continue
        nodes.extend(_node(node, layout))
    return Graph(
        tuple(n if isinstance(n, Node) else n.node() for n in nodes),
        tuple(_tensor(t, layout) for t in graph.live),
    )


class _Batch:
    """The lookups of the tables a chip serves with one row width: one table-batched kernel."""

    def __init__(self, first: Node) -> None:
        self.first = first
        self.lookups = self.outputs = self.hits = 0.0  # hits: lookups served from the cached rows

    def add(self, lookups: float, outputs: float, cached: float) -> None:
        self.lookups += lookups
        self.outputs += outputs
        self.hits += cached * lookups

    def node(self) -> Node:
        op = rebuild(
            self.first.op, lookups=self.lookups, outputs=self.outputs, cached=self.hits / self.lookups
        )
        return Node(
            op, count=self.first.count, phase=self.first.phase, grad=self.first.grad, dims=self.first.dims
        )


def _changes(op: Op, splits: tuple[Split, ...], layout: Layout, skip: str = "") -> dict[str, float]:
    """The fields of `op` that `layout` divides, at their values on one chip."""
    changes: dict[str, float] = {}
    for s in splits:
        if s.axis == "table" and s.dim != "ranks":
            changes[s.dim] = changes.get(s.dim, getattr(op, s.dim)) * layout.tables[s.index]
            continue
        if s.axis == "hot":
            changes[s.dim] = layout.hot[s.index] if layout.hot else 0.0
            continue
        ways = layout.ranks(s.axis)
        if ways == 1 or s.axis == skip:
            continue
        if isinstance(op, Attention) and s.dim == "heads":
            changes["heads"] = op.heads // ways
            changes["kv_heads"] = -(-op.kv_heads // ways)  # a rank keeps at least one key/value head
            continue
        changes[s.dim] = s.divide(changes.get(s.dim, getattr(op, s.dim)), ways)
    return changes


def _divided(op: Op, splits: tuple[Split, ...], layout: Layout, skip: str = "") -> Op:
    changes = _changes(op, splits, layout, skip)
    if isinstance(op, Matmul):  # a rank keeps a row or column at least: fewer than the ranks are padded
        changes = {k: v if v > 0 else 1 for k, v in changes.items()}
    return rebuild(op, **changes) if changes else op


def _routed(node: Node, layout: Layout) -> tuple[Op, Routing]:
    """An expert op on one rank: the experts it holds that receive tokens, rows each; and the
    routing as that rank sees it."""
    r = node.routed
    assert r is not None
    dim = next(s.dim for s in node.split if s.axis == "ep")
    local = r.experts // layout.ep
    return r.place(node.op, dim, r.tokens * layout.token_groups, local), rebuild(
        r, local=local, reach=layout.token_groups
    )


def _exchanged(r: Routing, size: float, layout: Layout) -> tuple[float, Routing]:
    """An expert exchange's payload on the busiest rank (the mean `size` times the routing's
    imbalance over the ranks that hold the experts), and the routing as that rank sees it: the
    rank that receives the most copies in the dispatch returns as many in the combine, and sorts
    them on arrival and before the return."""
    local = r.experts // layout.ep
    seen = rebuild(r, local=local, reach=layout.token_groups)
    return size * seen.imbalance(r.tokens * layout.token_groups, local), seen


def _marker(node: Node, layout: Layout) -> list[Node]:
    """The collective a one-rank marker becomes on `layout`."""
    op = node.op
    assert isinstance(op, Collective)
    axis = next(s.axis for s in node.split if s.dim == "ranks")
    ranks = layout.ranks(axis)
    if ranks == 1:
        return []
    size = op.bytes_per_rank
    if isinstance(op, AllToAll) and axis == "table":
        return [rebuild(node, op=rebuild(op, ranks=ranks), split=())]
    if isinstance(op, AllToAll):
        if not layout.exchange:
            return []
        routed = node.routed
        if routed is not None:
            size, routed = _exchanged(routed, size, layout)
        sort = Copy(size_bytes=size, name=f"{op.name}.sort")
        moved = AllToAll(ranks=ranks, bytes_per_rank=size, name=op.name)
        sort_dims = tuple(("size_bytes", names) for f, names in node.dims if f == "bytes_per_rank")
        sorted_ = rebuild(node, op=sort, split=(), dims=sort_dims, routed=routed)
        sent = rebuild(node, op=moved, split=(), routed=routed)
        return [sent, sorted_] if "dispatch" in op.name else [sorted_, sent]
    split_stream = layout.sequence_parallel and axis in ("tp", "moe")
    new: Collective | None
    if isinstance(op, AllGather) and op.name == "tp.allgather":  # a split value made whole
        return [rebuild(node, op=AllGather(ranks=ranks, bytes_per_rank=size, name=op.name), split=())]
    if isinstance(op, AllReduce):
        new = (ReduceScatter if split_stream else AllReduce)(ranks=ranks, bytes_per_rank=size, name=op.name)
    elif isinstance(op, AllGather):
        new = AllGather(ranks=ranks, bytes_per_rank=size, name=op.name) if split_stream else None
    else:
        new = rebuild(op, ranks=ranks)
    return [] if new is None else [rebuild(node, op=new, split=())]


def _node(node: Node, layout: Layout) -> list[Node]:
    op = node.op
    if isinstance(op, Collective) and op.ranks == 1 and any(s.dim == "ranks" for s in node.split):
        sized = _divided(op, tuple(s for s in node.split if s.dim != "ranks"), layout)
        return _marker(rebuild(node, op=sized), layout)
    routed = node.routed
    if routed is not None:
        op, routed = _routed(node, layout)
    op = _divided(op, node.split, layout, skip="ep" if routed is not None else "")
    if op is node.op and routed is node.routed and not (isinstance(op, Attention) and layout.cp > 1):
        return [node]
    out = [Node(op, count=node.count, phase=node.phase, split=node.split, routed=routed, grad=node.grad,
                dims=node.dims)]  # fmt: skip
    if isinstance(op, Attention) and layout.cp > 1:
        out = [rebuild(node, op=op, count=node.count / layout.cp)]
        # Ring attention: each rank's key/value block visits the other cp - 1 ranks while the
        # attention computes; the backward passes the blocks and their gradients.
        tokens = op.batch * op.kv_len // layout.cp
        block = (
            tokens * op.kv_heads * (op.head_dim + op.dv) * BYTES_PER_ELEMENT[op.kv_precision or op.precision]
        )
        sends = (layout.cp - 1) * (2 if op.backward else 1)
        ring = SendRecv(ranks=2, bytes_per_rank=block, name="cp.ring")
        out.append(Node(ring, count=node.count * sends, phase=node.phase))
    return out


def _tensor(t: Tensor, layout: Layout) -> Tensor:
    elements = t.elements
    for s in t.split:
        elements = s.divide(elements, layout.ranks(s.axis))
    return rebuild(t, elements=elements) if elements != t.elements else t
