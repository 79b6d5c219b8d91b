"""Tensor-parallel placement of a captured graph: GSPMD's propagation with Megatron's choices.

Every tensor gets a placement: whole (the same on every rank), split along one of its
dimensions (by the tensor-parallel ranks, `tp`, or for the experts by the ranks one expert's
FFN spans, `etp`), partial (each rank holds a partial sum) or the stream (the residual stream
between the blocks: whole on every rank, split by tokens under sequence parallelism). The pass
walks the graph in order and tracks which dimension is split through views, reshapes (the
split goes to the outer factor: heads, not the width of one head), permutes, slices and
pointwise maps (`splits.py`). A whole operand meets a split one by slicing its own share.

- A product with a weight whose input is whole is column-parallel (`Split(axis, "n")`, its
  output split on its last dimension) when that output reaches a product that reads it on its
  reduction dimension, or leaves the graph (vocabulary-parallel logits); otherwise its weights
  stay whole and it is listed. One whose input is split on its reduction dimension is
  row-parallel (`Split(axis, "k")`), its output partial. Merged query-key-value products split
  their columns by head groups (`Split(..., packed=(heads, kv, kv))`).
- Attention on head-split queries, keys and values splits its heads; a product of two
  activations split on a batch dimension splits its groups.
- Pointwise maps take the split of their split inputs (a bias or a per-channel weight is sliced
  with them); a reduction keeps a split it does not reduce over. Partial sums pass through the
  maps that are linear in them (scaling, moving rows, summing) and meet in a `tp.reduce`
  (`moe.reduce` for the experts) where something needs their value. The result is the stream
  (a reduce-scatter leaves it split by tokens under sequence parallelism); a `tp.gather` makes
  it whole before a product reads it, and a norm over the hidden size runs on it as it is.
- The token embedding is vocabulary-parallel: each rank looks up its share of the tokens and
  the partial embeddings meet in a `tp.reduce`, as in Megatron and the analytic lowering.

An op the rules cannot place is computed whole on every rank and listed with the reason; each
of its split inputs is gathered first (a `tp.allgather`, an all-gather over the tensor-parallel
ranks whatever the layout), and that transfer is costed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.compiler.lower import FREE, Context, Lowered, target_name
from tapeout.compiler.operands import operand_args
from tapeout.compiler.passes import Fusion
from tapeout.compiler.splits import (
    ATTENTION,
    FIELD,
    GROUPED,
    STREAM,
    SUMS,
    WEIGHTED,
    WHOLE,
    MeshAxis,
    Place,
    Placed,
    carry,
    is_linear,
    like,
    reduced,
    role,
    tensors,
)  # fmt: skip
from tapeout.workloads.graph import Split
from tapeout.workloads.ops import Attention, Gather, Matmul, Op, Reduce

Fx = torch.fx.Node


@dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """A one-rank collective inserted before node `before` (`output`: at the end): `tp.reduce`
    (or `moe.reduce`) where the partial sums of `of` meet, `tp.gather` where the stream `of`
    must be whole, `tp.allgather` where an op left whole reads `of` split; `bytes` is the whole
    value in the program's formats."""

    name: str
    of: str
    before: str
    bytes: float

    @property
    def split(self) -> tuple[Split, ...]:
        return (Split("moe" if self.name == "moe.reduce" else "tp", "ranks"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """The splits of each op node, the markers in graph order, and the ops left whole with why."""

    splits: Mapping[str, tuple[Split, ...]]
    markers: tuple[Marker, ...]
    unplaced: Mapping[str, str]


def place(
    gm: torch.fx.GraphModule, nodes: Sequence[Lowered], fusion: Fusion, ctx: Context, weights: Collection[str]
) -> Placement:
    """The placement of every node of `gm` (lowered as `nodes`, fused as `fusion`); `weights`:
    the placeholders that hold parameters (a training graph's)."""
    placer = _Placer(ctx, {n.name: n for n in nodes}, frozenset(weights))
    for node in gm.graph.nodes:
        placer.visit(node)
    placer.pack(fusion, {n.name: i for i, n in enumerate(nodes)})
    return Placement(splits=placer.splits, markers=tuple(placer.markers), unplaced=placer.unplaced)


class _Placer:
    def __init__(self, ctx: Context, lowered: Mapping[str, Lowered], weights: frozenset[str]) -> None:
        self.ctx, self.lowered, self.weights = ctx, lowered, weights
        self.places: dict[Fx, Placed] = {}
        self.origin: dict[Fx, Fx] = {}  # a view's storage: reduced or gathered once for all its views
        self.reduced: set[Fx] = set()
        self.gathered: set[Fx] = set()
        self.splits: dict[str, tuple[Split, ...]] = {}
        self.markers: list[Marker] = []
        self.unplaced: dict[str, str] = {}
        self.heads: dict[str, tuple[int, int]] = {}  # a product's output viewed as (groups, width)

    def visit(self, node: Fx) -> None:
        if node.op == "output":  # the program returns values, not partial sums
            for a in node.all_input_nodes:
                self._need(a, node)
            return
        lo = self.lowered.get(node.name)
        if node.op != "call_function" or lo is None or lo.folded or not tensors(node):
            self.places[node] = WHOLE
            return
        op = lo.op
        if lo.fallback:
            out = self._whole(node, "no lowering rule (runs on the host)")
        elif op is None:
            out = self._view(node)
        elif isinstance(op, Matmul):
            out = self._product(node)
        elif isinstance(op, Attention):
            out = self._attention(node)
        elif isinstance(op, Reduce):
            out = self._reduce(node)
        elif isinstance(op, Gather):
            out = self._gather(node)
        else:
            out = self._pointwise(node, op)
        self.places[node] = out

    # ---- placements as a reader sees them ------------------------------------------------------
    def _of(self, node: Any) -> Place:
        """A tensor's placement now (partial sums already reduced, a stream already gathered)."""
        if not isinstance(node, Fx):
            return WHOLE
        p = self.places.get(node, WHOLE)
        p = p[0] if isinstance(p, tuple) else p
        key = self.origin.get(node, node)
        if p.kind == "partial" and key in self.reduced:
            p = WHOLE if key in self.gathered else STREAM
        return WHOLE if p.kind == "stream" and key in self.gathered else p

    def _need(self, node: Any, before: Fx, *, stream: bool = True) -> Place:
        """`node`'s placement as `before` reads it: partial sums meet first, and the stream is
        gathered unless the reader takes it split by tokens (`stream`)."""
        p = self._of(node)
        if not isinstance(node, Fx):
            return p
        key = self.origin.get(node, node)
        if p.kind == "partial":
            self._mark("moe.reduce" if p.axis == "etp" else "tp.reduce", node, before)
            self.reduced.add(key)
            p = STREAM
        if p.kind == "stream" and not stream:
            self._mark("tp.gather", node, before)
            self.gathered.add(key)
            p = WHOLE
        return p

    def _mark(self, name: str, of: Fx, before: Fx) -> None:
        self.markers.append(Marker(name=name, of=of.name, before=before.name, bytes=self.ctx.nbytes(of)))

    def _whole(self, node: Fx, why: str) -> Placed:
        """`node` computed whole on every rank, its inputs made whole (listed if one was split)."""
        split = [a for a in node.all_input_nodes if self._need(a, node, stream=False).kind == "split"]
        for a in split:  # each rank gathers the other ranks' shares first
            self._mark("tp.allgather", a, node)
        if split:
            names = ", ".join(a.name for a in split)
            self.unplaced[node.name] = f"{why}; gathers {names} from the ranks first"
        return like(node, WHOLE)

    def _split(self, node: Fx, *splits: Split) -> None:
        self.splits[node.name] = splits

    # ---- products and attention ----------------------------------------------------------------
    def _product(self, node: Fx) -> Placed:
        name = target_name(node)
        if name not in WEIGHTED:
            return self._whole(node, f"{name} has no placement rule")
        x = self.weighted_input(node)
        if x is not None:
            return self._weighted(node, x, "etp" if name in GROUPED else "tp")
        a, b = operand_args(node)
        return self._activations(node, a, b)

    def weighted_input(self, node: Fx) -> Any:
        """The activation a product multiplies by a weight (None: not a product with a weight)."""
        name = target_name(node)
        lo = self.lowered.get(node.name)
        if name not in WEIGHTED or lo is None or not isinstance(lo.op, Matmul):
            return None
        x, w = (node.args[0], node.args[1]) if name in GROUPED else operand_args(node)
        if name in ("aten.bmm", "aten.matmul") and not (len(self.ctx.shape(w)) == 2 or _expanded(w)):
            return None
        return x if self._is_weight(w) else None

    def _weighted(self, node: Fx, x: Any, axis: MeshAxis) -> Placed:
        p = self._need(x, node, stream=False)
        out = len(self.ctx.shape(node)) - 1
        if p.kind == "split" and p.dim == len(self.ctx.shape(x)) - 1:  # row-parallel: partial sums
            self._split(node, Split(p.axis, "k"))
            return Place("partial", axis=p.axis)
        if p.kind == "split":  # rows of a split input
            self._split(node, Split(p.axis, "m"))
            return p
        block = self._blocked(node, out)
        if block is not None:
            self.unplaced[node.name] = f"weights not split: its output feeds {block}, which needs whole rows"
            return WHOLE
        self._split(node, Split(axis, "n"))  # column-parallel
        return Place("split", out, axis)

    def _activations(self, node: Fx, a: Any, b: Any) -> Placed:
        """A product of two activations: a batch split splits its groups, split rows or columns
        split m or n, a split reduction dim leaves partial sums; if both are split they agree."""
        pa, pb = self._need(a, node, stream=False), self._need(b, node, stream=False)
        out = len(self.ctx.shape(node))
        ra, rb = role(pa, len(self.ctx.shape(a)), out, "a"), role(pb, len(self.ctx.shape(b)), out, "b")
        if ra is None and rb is None:
            return like(node, WHOLE)
        if ra is not None and rb is not None and (ra != rb or pa.axis != pb.axis):
            return self._whole(node, "operands split on dimensions that do not meet")
        dim, axis = (ra, pa.axis) if ra is not None else (rb, pb.axis)
        assert dim is not None
        self._split(node, Split(axis, dim[0]))
        return Place("partial", axis=axis) if dim[0] == "k" else Place("split", dim[1], axis)

    def _attention(self, node: Fx) -> Placed:
        name = target_name(node)
        if name not in ATTENTION:
            return self._whole(node, f"{name} has no placement rule")
        split = [p for p in (self._need(t, node, stream=False) for t in node.args[:3]) if p.kind == "split"]
        if not split:
            return like(node, WHOLE)
        if all(p.dim == 1 and p.axis == split[0].axis for p in split):
            self._split(node, Split(split[0].axis, "heads"))
            return like(node, Place("split", 1, split[0].axis))
        return self._whole(node, "query, key and value not split by heads")

    # ---- reductions, lookups, pointwise maps, views --------------------------------------------
    def _reduce(self, node: Fx) -> Placed:
        x, name = node.args[0], target_name(node)
        p = self._of(x)
        if p.kind == "partial" and name in SUMS:
            return p  # a sum of partial sums
        p = self._need(x, node)
        dims, keep = reduced(self.ctx, node)
        if p.kind == "stream" and dims == {len(self.ctx.shape(x)) - 1}:
            self._split(node, Split("sp", "rows"))  # a norm over the hidden size, by tokens
            return like(node, STREAM)
        p = self._need(x, node, stream=False)
        if p.kind == "whole":
            return like(node, WHOLE)
        if p.dim not in dims:
            self._split(node, Split(p.axis, "rows"))
            kept = p.dim if keep else p.dim - sum(1 for d in dims if d < p.dim)
            return like(node, Place("split", kept, p.axis))
        if name in SUMS:
            self._split(node, Split(p.axis, "cols"))
            return Place("partial", axis=p.axis)
        return self._whole(node, f"{name} reduces over the split dimension")

    def _gather(self, node: Fx) -> Placed:
        name = target_name(node)
        if name == "aten.embedding" and self._is_weight(node.args[0]):
            self._need(node.args[1], node, stream=False)
            self._split(node, Split("tp", "lookups"))  # vocabulary-parallel
            return Place("partial")
        x, indices = node.args[0], node.args[1] if len(node.args) > 1 else None
        if (
            name != "aten.index"
            or not isinstance(indices, list | tuple)
            or not all(isinstance(i, Fx) for i in indices)
        ):
            return self._whole(node, f"{name} has no placement rule for these operands")  # fmt: skip
        for i in indices:
            self._need(i, node, stream=False)
        p = self._of(x)
        if p.kind == "partial":
            return p  # rows of partial sums
        p = self._need(x, node, stream=False)
        if p.kind == "whole" or p.dim < len(indices):
            return self._whole(node, "indexing along the split dimension")
        nd, out = len(self.ctx.shape(x)), len(self.ctx.shape(node))
        fields = ("dim",) if p.dim == nd - 1 else ("lookups", "outputs")
        self._split(node, *(Split(p.axis, f) for f in fields))
        return Place("split", p.dim - nd + out, p.axis)

    def _pointwise(self, node: Fx, op: Op) -> Placed:
        inputs = [a for a in node.all_input_nodes if tensors(a)]
        places = {a: self._of(a) for a in inputs}
        if any(p.kind == "partial" for p in places.values()):
            if is_linear(node, places):
                return like(node, next(p for p in places.values() if p.kind == "partial"))
            places = {a: self._need(a, node) for a in inputs}
        split = {a: p for a, p in places.items() if p.kind == "split"}
        dims = {carry(self.ctx, self.lowered, node, a, p.dim) for a, p in split.items()}
        axes = {p.axis for p in split.values()}
        field = FIELD.get(type(op), "elements")
        if split:
            d = dims.pop()
            if d is None or dims or len(axes) > 1:
                return self._whole(node, "inputs split on dimensions that do not line up")
            for a, p in places.items():
                if p.kind == "stream":
                    self._need(a, node, stream=False)
            axis = axes.pop()
            self._split(node, Split(axis, field))
            return like(node, Place("split", d, axis))
        streams = [a for a, p in places.items() if p.kind == "stream"]
        if streams and all(self.ctx.shape(a)[:-1] == self.ctx.shape(node)[:-1] for a in streams):
            self._split(node, Split("sp", field))
            return like(node, STREAM)
        for a in streams:
            self._need(a, node, stream=False)
        return like(node, WHOLE)

    def _view(self, node: Fx) -> Placed:
        src = node.args[0] if node.args and isinstance(node.args[0], Fx) else None
        if src is None or not tensors(src):
            return like(node, WHOLE)
        p = self._of(src)
        self.origin[node] = self.origin.get(src, src)
        if p.kind == "partial":
            return like(node, p)
        if p.kind == "stream":
            last, out = len(self.ctx.shape(src)) - 1, len(self.ctx.shape(node)) - 1
            if last >= 0 and self._carry(node, src, last) == out and self.ctx.shape(src)[-1] == self.ctx.shape(node)[-1]:  # fmt: skip
                return like(node, STREAM)  # the hidden size stays last: still the stream
            p = self._need(src, node, stream=False)
        if p.kind == "whole":
            return like(node, WHOLE)
        d = self._carry(node, src, p.dim)
        if d is None:
            return self._whole(node, "a view that moves the split dimension")
        return like(node, Place("split", d, p.axis))

    def _carry(self, node: Fx, src: Fx, d: int) -> int | None:
        """`carry`, noting where a product's output is viewed as heads of one width."""
        out = carry(self.ctx, self.lowered, node, src, d, self.weighted_input(node))
        lo = self.lowered.get(src.name)
        si, so = self.ctx.shape(src), self.ctx.shape(node)
        if (
            out is not None
            and lo is not None
            and isinstance(lo.op, Matmul)
            and 0 <= d < len(si)
            and so[out] < si[d]
        ):
            self.heads[src.name] = (so[out], si[d] // so[out])  # fmt: skip
        return out

    def _blocked(self, product: Fx, dim: int) -> str | None:
        """What keeps `product`'s output from staying split on `dim` until a product reads it on
        its reduction dimension or it leaves the graph (None: nothing does)."""
        todo, seen = [(product, dim)], set()
        while todo:
            node, d = todo.pop()
            if (node, d) in seen:
                continue
            seen.add((node, d))
            for user in node.users:
                lo = self.lowered.get(user.name)
                if user.op == "output" or lo is None or lo.folded or not tensors(user):
                    continue
                if self.weighted_input(user) is node and d == len(self.ctx.shape(node)) - 1:
                    continue  # read on its reduction dimension: row-parallel
                nxt = self._carry(user, node, d)
                if nxt is None:
                    return f"{user.name} ({lo.target})"
                todo.append((user, nxt))
        return None

    def _is_weight(self, node: Any) -> bool:
        while isinstance(node, Fx) and node.op == "call_function" and target_name(node) in FREE:
            node = node.args[0]
        return isinstance(node, Fx) and (node.op == "get_attr" or node.name in self.weights)

    def pack(self, fusion: Fusion, order: Mapping[str, int]) -> None:
        """Merged products (query, key and value; gate and up) split their columns as one: by head
        groups where every part's output is viewed as heads of one width."""
        groups: dict[str, list[str]] = {}
        for name in sorted(fusion.merged, key=order.__getitem__):
            first = fusion.fused_into[name]
            groups.setdefault(first, [first]).append(name)
        for first, members in groups.items():
            splits = {self.splits.get(m, ()) for m in members}
            if len(splits) > 1:
                self.splits[first] = ()
                self.unplaced[first] = f"merged with {', '.join(members[1:])}, which are placed differently"
                continue
            (split,) = splits
            heads = [h for m in members if (h := self.heads.get(m))]
            if len(split) == 1 and split[0].dim == "n" and len(heads) == len(members) and len({w for _, w in heads}) == 1:  # fmt: skip
                self.splits[first] = (Split(split[0].axis, "n", tuple(g for g, _ in heads)),)


def _expanded(node: Any) -> bool:
    return isinstance(node, Fx) and target_name(node) == "aten.expand"
