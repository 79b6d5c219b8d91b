"""Where a split dimension goes: the placements of tensor parallelism (`placement`) and how one
ATen op carries a split of its input to its output (views, reshapes, permutes, slices, pointwise
maps, reductions, products), with the op tables the placement reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.compiler.lower import Context, Lowered, target_name
from tapeout.compiler.operands import operand_args
from tapeout.workloads.ops import Copy, Elementwise, Matmul, Op, Reduce

Fx = torch.fx.Node
Kind = Literal["whole", "split", "partial", "stream"]
MeshAxis = Literal["tp", "etp"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a tensor lives: `kind`, the dimension a split cuts, the mesh axis of a split or a
    partial sum."""

    kind: Kind
    dim: int = 0
    axis: MeshAxis = "tp"


WHOLE, STREAM = Place("whole"), Place("stream")
Placed = Place | tuple[Place, ...]  # a tuple for ops with several outputs (topk, dropout)

# The op field a split of the tensor an op writes divides (on a dimension it does not reduce).
FIELD: dict[type[Op], str] = {Elementwise: "elements", Reduce: "rows", Copy: "size_bytes", Matmul: "m"}
SAME = frozenset(
    ["aten.alias", "aten.detach", "aten.clone", "aten.contiguous", "aten._to_copy", "aten.lift_fresh_copy",
     "aten.dropout", "aten.native_dropout", "aten.copy", "getitem", "aten.split", "aten.split_with_sizes",
     "aten.chunk", "aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.empty_like", "aten.clone_noop"]
)  # fmt: skip  # a split along the split dim: the pieces of a packed product, each split alike
RESHAPE = frozenset(["aten.view", "aten.reshape", "aten._unsafe_view", "aten.flatten", "aten.unflatten"])
WEIGHTED = frozenset(["aten.linear", "aten.mm", "aten.addmm", "aten.bmm", "aten.matmul", "aten._scaled_mm",
                      "aten._grouped_mm", "transformers.grouped_mm_fallback"])  # fmt: skip
GROUPED = frozenset(["aten._grouped_mm", "transformers.grouped_mm_fallback"])  # the experts' products
ATTENTION = frozenset(["aten.scaled_dot_product_attention", "aten._scaled_dot_product_flash_attention_for_cpu",
                       "aten._scaled_dot_product_efficient_attention", "aten._scaled_dot_product_flash_attention"])  # fmt: skip
# Reductions along one dim (the argument that names it); over the trailing dims; over a dim list.
ALONG = {"aten.softmax": 1, "aten._softmax": 1, "aten.log_softmax": 1, "aten._log_softmax": 1,
         "aten._softmax_backward_data": 2, "aten._log_softmax_backward_data": 2, "aten.cumsum": 1,
         "aten.cumprod": 1, "aten.logcumsumexp": 1, "aten.sort": 1, "aten.argsort": 1, "aten.topk": 2}  # fmt: skip
NORMS = frozenset(["aten.layer_norm", "aten.native_layer_norm", "aten.rms_norm", "aten._fused_rms_norm"])
SUMS = frozenset(["aten.sum", "aten.mean"])  # linear: a sum over a split dim leaves partial sums
OVER = SUMS | {"aten.amax", "aten.amin", "aten.max", "aten.min", "aten.var", "aten.var_mean", "aten.std",
               "aten.prod", "aten.any", "aten.all", "aten.argmax", "aten.argmin", "aten.logsumexp"}  # fmt: skip
LINEAR = frozenset(
    ["aten.mul", "aten.div", "aten.neg", "aten._to_copy", "aten.add", "aten.sub", "aten.clone"]
)
# Ops lowered like pointwise maps whose elements do not line up with their inputs'.
NOT_POINTWISE = frozenset(["aten.constant_pad_nd", "aten.tril", "aten.triu", "aten.slice_scatter",
                           "aten.select_scatter", "aten.diagonal_scatter", "aten.as_strided_scatter", "aten.repeat",
                           "aten.roll", "aten.flip", "aten.masked_scatter", "aten.repeat_interleave"])  # fmt: skip


def carry(
    ctx: Context, lowered: Mapping[str, Lowered], node: Fx, src: Fx, d: int, weighted: Any = None
) -> int | None:
    """The dim of `node`'s output that a split of `src` on dim `d` becomes, or None where the
    split cannot follow (`weighted`: the activation input of a product with a weight)."""
    name, si, so, args = target_name(node), ctx.shape(src), ctx.shape(node), node.args
    if name in SAME:
        return d
    if name in RESHAPE:
        return reshaped(si, so, d)
    if name == "aten.permute":
        return [_norm(x, len(si)) for x in args[1]].index(d)  # type: ignore[union-attr]
    if name in ("aten.transpose", "aten.t"):
        a, b = (_norm(args[1], len(si)), _norm(args[2], len(si))) if len(args) > 2 else (0, 1)
        return b if d == a else a if d == b else d
    if name == "aten.unsqueeze":
        return d + int(_norm(args[1], len(so)) <= d)
    if name == "aten.squeeze":
        return d - sum(1 for i in range(d) if si[i] == 1) if len(so) < len(si) else d
    if name == "aten.expand":
        return d + len(so) - len(si)
    if name in ("aten.slice", "aten.narrow", "aten.select", "aten.cat", "aten.stack"):
        return _sliced(name, args, si, so, d)
    if name in ATTENTION:
        return 1 if d == 1 and src in args[:3] else None
    if name in ALONG or name in NORMS or name in OVER:
        dims, keep = reduced(ctx, node)
        return None if d in dims else d if keep else d - sum(1 for x in dims if x < d)
    lo = lowered.get(node.name)
    op = lo.op if lo is not None else None
    if isinstance(op, Matmul) and name in WEIGHTED:
        if weighted is not None:
            return d if src is weighted and d < len(si) - 1 else None
        a, _ = operand_args(node)
        r = role(Place("split", d), len(si), len(so), "a" if src is a else "b")
        return r[1] if r is not None and r[0] != "k" else None
    if isinstance(op, Elementwise) and name not in NOT_POINTWISE:
        return d + len(so) - len(si)  # broadcasting aligns trailing dims
    return None


def reshaped(src: tuple[int, ...], dst: tuple[int, ...], d: int) -> int | None:
    """The dim of `dst` a split of `src`'s dim `d` lands on: the outer factor when the dim is cut
    into several (heads x width), the merged dim when it joins others; None when it straddles.

    >>> reshaped((2, 16, 256), (2, 16, 8, 32), 2), reshaped((2, 2, 4, 16, 32), (2, 8, 16, 32), 1)
    (2, 1)
    """
    outer, size = 1, src[d]
    for s in src[:d]:
        outer *= s
    lo = 1
    for j, s in enumerate(dst):
        hi = lo * s
        if s > 1 and lo == outer and (outer * size) % hi == 0:
            return j  # cut: its outer factor
        if s > 1 and lo <= outer and hi >= outer * size and outer % lo == 0 and hi % (outer * size) == 0:
            return j  # merged with its neighbours
        lo = hi
    return None


def role(p: Place, nd: int, out: int, side: Literal["a", "b"]) -> tuple[str, int] | None:
    """What a split operand dim is to a product of two activations (`groups`, `m`, `n`, or `k`
    for the reduction) and the output dim it becomes.

    >>> role(Place("split", 1), 4, 4, "a"), role(Place("split", 3), 4, 4, "b")
    (('groups', 1), ('n', 3))
    """
    if p.kind != "split" or nd < 2:
        return None
    if p.dim < nd - 2:
        return "groups", p.dim + out - nd
    if side == "a":
        return ("m", out - 2) if p.dim == nd - 2 else ("k", -1)
    return ("k", -1) if p.dim == nd - 2 else ("n", out - 1)


def reduced(ctx: Context, node: Fx) -> tuple[set[int], bool]:
    """The input dims `node` reduces over and whether it keeps them (as size-1 dims); an op with
    no known dims reduces over all of them."""
    name, args, nd = target_name(node), node.args, len(ctx.shape(node.args[0]))
    if name in NORMS:
        return set(range(nd - len(args[1]), nd)), True  # type: ignore[arg-type]
    if name in ALONG:
        at = ALONG[name]
        return {_norm(node.kwargs.get("dim", args[at] if len(args) > at else -1), nd)}, True
    if name not in OVER:
        return set(range(nd)), False
    dims = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
    keep = bool(node.kwargs.get("keepdim", args[2] if len(args) > 2 else False))
    if dims is None or dims == []:
        return set(range(nd)), keep
    return {_norm(x, nd) for x in (dims if isinstance(dims, list | tuple) else [dims])}, keep


def is_linear(node: Fx, places: Mapping[Fx, Place]) -> bool:
    """`node` is linear in its partial operands: a scaling by whole values, a sum of partial
    sums, a cast."""
    name = target_name(node)
    partial = [a for a, p in places.items() if p.kind == "partial"]
    if name not in LINEAR or len({places[a].axis for a in partial}) > 1:
        return False
    if name in ("aten.mul", "aten.div"):
        return len(partial) == 1 and (name == "aten.mul" or node.args[0] is partial[0])
    if name in ("aten.add", "aten.sub"):
        return all(isinstance(a, Fx) and a in partial for a in node.args[:2])
    return True


def tensors(node: Any) -> bool:
    """`node` writes one tensor or more."""
    v = node.meta.get("val") if isinstance(node, Fx) else None
    if isinstance(v, list | tuple):
        return any(isinstance(x, torch.Tensor) for x in v)
    return isinstance(v, torch.Tensor)


def like(node: Fx, p: Place) -> Placed:
    """`p` for each tensor `node` writes (a tuple where it writes several)."""
    v = node.meta.get("val")
    return tuple(p for _ in v) if isinstance(v, tuple) else p


def _norm(d: Any, nd: int) -> int:
    return int(d) % max(nd, 1)


def _sliced(name: str, args: Any, si: tuple[int, ...], so: tuple[int, ...], d: int) -> int | None:
    if name == "aten.stack":
        return d + int(_norm(args[1] if len(args) > 1 else 0, len(so)) <= d)
    dim = _norm(args[1] if len(args) > 1 else 0, len(so) if name == "aten.cat" else len(si))
    if name == "aten.select":
        return None if dim == d else d - int(dim < d)
    if dim != d:
        return d
    return d if name != "aten.cat" and si[d] == so[d] else None
