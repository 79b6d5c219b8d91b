"""Lowering: every node of a decomposed ATen graph to an op of the closed vocabulary, a free
layout op, or a costed fallback.

Matrix products become `Matmul` (with their M, N, K and groups), attention `Attention` (grouped
query heads and a causal mask recognised), norms, softmax and reductions `Reduce`, lookups
`Gather`, pointwise maps `Elementwise`, materialising copies `Copy`. Views, reshapes, permutes,
expands, slices that are views and bookkeeping nodes cost nothing. A node with no rule runs on
the host: a `Copy` of the bytes it reads and writes, flagged `fallback`, listed in the report.

Tensors are costed in the program's formats (`Numerics`): a floating-point activation in the
stream's format whatever the captured model's dtype, matrix inputs in the compute format,
integer and boolean tensors at their own width.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.compiler.operands import operand_args
from tapeout.compiler.patterns import kv_heads, mask_kind, repeat_nodes
from tapeout.precision import Numerics
from tapeout.workloads.ops import Attention, Copy, Elementwise, Gather, Matmul, Op, Reduce, rebuild

Fx = torch.fx.Node
# What a rule returns: an op, or None for a free node (a view, bookkeeping).
Rule = Callable[["Context", Fx], Op | None]
RULES: dict[str, Rule] = {}
FREE = frozenset(
    ["aten.view", "aten.reshape", "aten._unsafe_view", "aten.permute", "aten.expand", "aten.t", "aten.transpose", "aten.unsqueeze", "aten.squeeze", "aten.slice", "aten.select", "aten.alias", "aten.detach", "aten.split", "aten.split_with_sizes", "aten.unbind", "aten.as_strided", "aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_size", "aten.sym_numel", "aten.sym_stride", "aten.sym_storage_offset", "aten.lift_fresh_copy", "aten.empty", "aten.empty_like", "aten.empty_permuted", "aten.empty_strided", "aten.new_empty", "aten.unflatten", "aten.flatten", "aten.contiguous", "aten.chunk", "aten.narrow", "aten.movedim", "aten.dropout", "aten.clone_noop", "aten._local_scalar_dense", "aten.scalar_tensor", "aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.zeros", "aten.ones", "aten.full", "aten.arange", "aten.lift"]
)  # fmt: skip
# Creation ops above are free: constants a compiler folds or writes once into the program.


@dataclass(frozen=True, slots=True, kw_only=True)
class Lowered:
    """One node of the captured graph: its op (None when free), the nodes whose outputs it reads,
    the bytes of its output in the program's formats, and where it came from."""

    name: str
    target: str
    op: Op | None
    inputs: tuple[str, ...]
    out_bytes: float
    shape: str
    fallback: bool = False
    fused_into: str | None = None  # set by the lowering where a pattern absorbs a node
    folded: bool = False  # computed from constants alone: evaluated once when the program loads
    source: str = ""


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return register


class Context:
    """Shapes at the program's sizes and the formats tensors are costed in."""

    def __init__(self, gm: torch.fx.GraphModule, numerics: Numerics, sizes: Mapping[Any, int]) -> None:
        self.gm, self.numerics, self.sizes = gm, numerics, sizes

    def val(self, node: Any) -> Any:
        return node.meta.get("val") if isinstance(node, Fx) else None

    def size(self, value: Any) -> int:
        if isinstance(value, torch.SymInt):
            expr = value.node.expr.xreplace(self.sizes)
            return int(expr)
        return int(value)

    def shape(self, node: Any) -> tuple[int, ...]:
        v = self.val(node)
        if isinstance(v, list | tuple):
            v = v[0]
        if not isinstance(v, torch.Tensor):
            return ()
        return tuple(self.size(d) for d in v.shape)

    def numel(self, node: Any) -> int:
        return math.prod(self.shape(node))

    def width(self, node: Any, role: str = "stream") -> tuple[str, float]:
        """(format, elements per value) a tensor is costed in: floating point in the program's
        format for `role`, integers and booleans at their own width."""
        v = self.val(node)
        if isinstance(v, list | tuple):
            v = v[0]
        dtype = v.dtype if isinstance(v, torch.Tensor) else torch.float32
        if dtype.is_floating_point:
            return getattr(self.numerics, role), 1.0
        size = torch.empty((), dtype=dtype).element_size() if dtype != torch.bool else 1
        return {1: ("int8", 1.0), 2: ("bf16", 1.0), 4: ("fp32", 1.0)}.get(size, ("fp32", size / 4))

    def nbytes(self, node: Any) -> float:
        v = self.val(node)
        values = v if isinstance(v, list | tuple) else (v,)
        total = 0.0
        for t in values:
            if isinstance(t, torch.Tensor):
                fmt, scale = self.width(node)
                total += math.prod(self.size(d) for d in t.shape) * scale * _BYTES[fmt]
        return total


_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5}


def _any(value: object) -> Any:
    """An FX argument as the value it holds (FX types arguments as a union of everything)."""
    return value


def target_name(node: Fx) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return str(t._overloadpacket)
    if t is operator.getitem:
        return "getitem"
    return getattr(t, "__name__", str(t))


def lower(gm: torch.fx.GraphModule, numerics: Numerics, sizes: Mapping[Any, int]) -> tuple[Lowered, ...]:
    """Every call node of `gm` lowered, in graph order, at the dynamic `sizes` (symbol -> size)."""
    ctx = Context(gm, numerics, sizes)
    out: list[Lowered] = []
    absorbed: dict[str, str] = {}
    varying = _varying(gm)
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = target_name(node)
        op, fallback = _lower_one(ctx, node, name)
        if name in ("aten.scaled_dot_product_attention", "aten._scaled_dot_product_flash_attention_for_cpu"):
            for n in repeat_nodes(node):
                absorbed[n.name] = node.name
        inputs = tuple(a.name for a in node.all_input_nodes if a.op == "call_function")
        trace = node.meta.get("stack_trace") or ""
        source = trace.strip().splitlines()[-2].strip() if trace.count("\n") >= 1 else ""
        out.append(Lowered(name=node.name, target=name, op=op, inputs=inputs, out_bytes=ctx.nbytes(node),
                           shape=_shape_text(ctx, node), fallback=fallback, source=source,
                           folded=node not in varying))  # fmt: skip
    return tuple(
        Lowered(name=lo.name, target=lo.target, op=lo.op, inputs=lo.inputs, out_bytes=lo.out_bytes,
                shape=lo.shape, fallback=lo.fallback, fused_into=absorbed[lo.name], source=lo.source)
        if lo.name in absorbed else lo
        for lo in out
    )  # fmt: skip


def _varying(gm: torch.fx.GraphModule) -> set[Fx]:
    """The nodes that depend on an input's values (a size alone, `sym_size`, is known per program)."""
    out: set[Fx] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or (
            node.op == "call_function"
            and "sym_size" not in str(node.target)
            and any(a in out for a in node.all_input_nodes)
        ):
            out.add(node)
    return out


def _lower_one(ctx: Context, node: Fx, name: str) -> tuple[Op | None, bool]:
    fn = RULES.get(name)
    if fn is not None:
        return fn(ctx, node), False
    if name in FREE or name == "getitem" or not isinstance(ctx.val(node), torch.Tensor | list | tuple):
        return None, False
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        if torch.Tag.pointwise in target.tags:
            return pointwise(ctx, node), False
        returns = target._schema.returns
        if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
            return None, False  # a view of its input
    moved = ctx.nbytes(node) + sum(ctx.nbytes(a) for a in node.all_input_nodes)
    return Copy(size_bytes=moved, name=node.name), True


def _shape_text(ctx: Context, node: Fx) -> str:
    return "x".join(str(d) for d in ctx.shape(node)) or "-"


# ---- matrix products -------------------------------------------------------------------------
def _mm(ctx: Context, node: Fx, m: int, n: int, k: int, groups: int = 1, weights: bool = True) -> Matmul:
    num = ctx.numerics
    return Matmul(m=max(m, 1), n=max(n, 1), k=max(k, 1), groups=max(groups, 1), precision=num.compute,
                  weight_precision=num.weights if weights else None, out_precision=num.stream,
                  name=node.name)  # fmt: skip


@rule("aten.linear")
def _linear(ctx: Context, node: Fx) -> Op:
    x, w = operand_args(node)
    n, k = ctx.shape(w)
    return _mm(ctx, node, ctx.numel(x) // max(k, 1), n, k)


@rule("aten.mm", "aten.addmm", "aten._int_mm", "aten._scaled_mm")
def _matrix(ctx: Context, node: Fx) -> Op:
    a, b = operand_args(node)
    m, k = ctx.shape(a)
    n = ctx.shape(b)[-1]
    return _mm(ctx, node, m, n, k, weights=_is_weight(b))


@rule("aten.bmm", "aten.baddbmm", "aten.matmul")
def _batched(ctx: Context, node: Fx) -> Op:
    a, b = operand_args(node)
    sa, sb = ctx.shape(a), ctx.shape(b)
    m, k, n = (sa[-2] if len(sa) > 1 else 1), sa[-1], sb[-1]
    groups = math.prod(sa[:-2]) if len(sa) > 2 else 1
    if _broadcast_weight(b):  # a weight expanded over the batch: one product of all the rows
        return _mm(ctx, node, m * groups, n, k)
    return _mm(ctx, node, m, n, k, groups, weights=False)


@rule("aten._grouped_mm", "transformers.grouped_mm_fallback")
def _grouped(ctx: Context, node: Fx) -> Op:
    """Experts' grouped product: rows sorted by expert, one (K x N) weight per expert; the rows
    are shared out evenly (balanced routing, as the analytic MoE lowering's mean load)."""
    x, w = node.args[0], node.args[1]
    rows, k = ctx.shape(x)[-2:]
    experts, n = ctx.shape(w)[0], ctx.shape(w)[-1]
    return _mm(ctx, node, max(1, round(rows / experts)), n, k, experts)


@rule("transformers.grouped_mm_fallback_backward")
def _grouped_backward(ctx: Context, node: Fx) -> Op:
    """The experts' grouped product's backward: per expert, the input gradient (rows x K from
    the output gradient and the weight) and the weight gradient (K x N over the rows), the same
    FLOPs each; costed as 2 x experts products of the input gradient's shape."""
    x, w = node.args[0], node.args[1]
    rows, k = ctx.shape(x)[-2:]
    experts, n = ctx.shape(w)[0], ctx.shape(w)[-1]
    return _mm(ctx, node, max(1, round(rows / experts)), k, n, 2 * experts, weights=False)


@rule("aten.convolution")
def _convolution(ctx: Context, node: Fx) -> Op:
    """A convolution as its implicit GEMM: output pixels x output channels x (input channels / groups x kernel)."""
    out, w = ctx.shape(node), ctx.shape(node.args[1])
    groups = int(_any(node.args[8])) if len(node.args) > 8 else 1
    pixels = math.prod(out) // max(out[1], 1)
    return _mm(ctx, node, pixels, out[1] // groups, math.prod(w[1:]), groups)


def _is_weight(node: Any) -> bool:
    """A get_attr (a parameter), or a view of one."""
    while isinstance(node, Fx) and node.op == "call_function" and target_name(node) in FREE:
        node = node.args[0]
    return isinstance(node, Fx) and node.op == "get_attr"


def _broadcast_weight(node: Any) -> bool:
    return (
        isinstance(node, Fx)
        and target_name(node) == "aten.expand"
        and _is_weight(node.args[0])
        and len(node.args[0].meta["val"].shape) == 2  # type: ignore[union-attr]
    )


# ---- attention -------------------------------------------------------------------------------
@rule("aten.scaled_dot_product_attention", "aten._scaled_dot_product_flash_attention_for_cpu",
      "aten._scaled_dot_product_efficient_attention", "aten._scaled_dot_product_flash_attention")  # fmt: skip
def _attention(ctx: Context, node: Fx) -> Op:
    return _attention_op(ctx, node, backward=False)


@rule("aten._scaled_dot_product_flash_attention_for_cpu_backward",
      "aten._scaled_dot_product_efficient_attention_backward", "aten._scaled_dot_product_flash_attention_backward")  # fmt: skip
def _attention_backward(ctx: Context, node: Fx) -> Op:
    return _attention_op(ctx, node, backward=True)


def _attention_op(ctx: Context, node: Fx, *, backward: bool) -> Op:
    q, k, v = node.args[1:4] if backward else node.args[:3]
    b, h, lq, d = ctx.shape(q)
    lk, dv = ctx.shape(k)[-2], ctx.shape(v)[-1]
    kwargs = dict(node.kwargs)
    causal = bool(kwargs.get("is_causal", False))
    if not backward and len(node.args) > 4 and node.args[4] is not None and isinstance(node.args[4], bool):
        causal = causal or node.args[4]
    mask = kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 and not backward else None)
    if isinstance(mask, Fx):
        causal = mask_kind(mask, ctx.size, lq, lk) == "causal"
    heads_kv = ctx.shape(k)[1] if kwargs.get("enable_gqa") else kv_heads(k, h, ctx.shape)
    return Attention(batch=max(b, 1), q_len=lq, kv_len=lk, heads=h, kv_heads=heads_kv, head_dim=d,
                     head_dim_v=dv if dv != d else None, causal=causal, backward=backward,
                     precision=ctx.numerics.attention, name=node.name)  # fmt: skip


# ---- reductions and norms --------------------------------------------------------------------
def _rows(ctx: Context, node: Fx, x: Any, cols: int, flops: float) -> Op:
    cols = max(cols, 1)
    fmt, _ = ctx.width(x)
    return Reduce(
        rows=max(ctx.numel(x) // cols, 1), cols=cols, flops_per_element=flops, precision=fmt, name=node.name
    )


@rule("aten.layer_norm", "aten.native_layer_norm", "aten.rms_norm", "aten._fused_rms_norm")
def _norm(ctx: Context, node: Fx) -> Op:
    normalized = node.args[1]
    cols = math.prod(ctx.size(s) for s in _any(normalized))
    return _rows(ctx, node, node.args[0], cols, 5.0)


@rule("aten.native_layer_norm_backward", "aten._fused_rms_norm_backward")
def _norm_backward(ctx: Context, node: Fx) -> Op:
    cols = math.prod(ctx.size(s) for s in _any(node.args[2]))
    return _rows(ctx, node, node.args[0], cols, 8.0)


@rule("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax", "aten._softmax_backward_data",
      "aten._log_softmax_backward_data", "aten.cumsum", "aten.cumprod", "aten.logcumsumexp", "aten.sort",
      "aten.topk", "aten.argsort")  # fmt: skip
def _along_dim(ctx: Context, node: Fx) -> Op:
    x = node.args[0]
    shape = ctx.shape(x)
    at = 2 if target_name(node) == "aten.topk" else 1
    dim = node.kwargs.get("dim", node.args[at] if len(node.args) > at else -1)
    if not isinstance(dim, int) or isinstance(dim, bool) or not -len(shape) <= dim < len(shape):
        dim = -1
    return _rows(ctx, node, x, shape[dim] if shape else 1, 5.0)


@rule("aten.sum", "aten.mean", "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.var", "aten.var_mean",
      "aten.std", "aten.prod", "aten.any", "aten.all", "aten.argmax", "aten.argmin", "aten.logsumexp",
      "aten.norm", "aten.linalg_vector_norm", "aten.histc", "aten.bincount")  # fmt: skip
def _reduce(ctx: Context, node: Fx) -> Op:
    x = node.args[0]
    total = ctx.numel(x)
    kept = ctx.numel(node) if isinstance(ctx.val(node), torch.Tensor) else 1
    return _rows(ctx, node, x, total // max(kept, 1) if kept < total else 1, 1.0)


# ---- lookups, copies, pointwise ---------------------------------------------------------------
@rule("aten.embedding")
def _embedding(ctx: Context, node: Fx) -> Op:
    table, ids = ctx.shape(node.args[0]), ctx.numel(node.args[1])
    fmt, _ = ctx.width(node.args[0])
    return Gather(lookups=ids, dim=table[-1], rows=table[0], outputs=ids, precision=fmt, name=node.name)


@rule("aten._embedding_bag", "aten.embedding_bag", "aten._embedding_bag_forward_only")
def _embedding_bag(ctx: Context, node: Fx) -> Op:
    table, ids, offsets = ctx.shape(node.args[0]), ctx.numel(node.args[1]), ctx.numel(node.args[2])
    last = bool(node.args[7]) if len(node.args) > 7 else False
    fmt, _ = ctx.width(node.args[0])
    bags = offsets - 1 if last else offsets
    return Gather(lookups=ids, dim=table[-1], rows=table[0], outputs=bags, precision=fmt, name=node.name)


@rule("aten.embedding_dense_backward", "aten._embedding_bag_backward", "aten._embedding_bag_dense_backward",
      "aten.index_put", "aten.index_add", "aten.scatter_add", "aten.scatter", "aten.scatter_reduce",
      "aten._unsafe_index_put", "aten.index", "aten.index_select", "aten.gather", "aten._unsafe_index")  # fmt: skip
def _scatter_gather(ctx: Context, node: Fx) -> Op:
    """Row reads or writes at indices: a gather of the rows moved (the output's rows for reads,
    the source's rows for writes)."""
    name = target_name(node)
    writes = name.startswith(("aten.index_put", "aten._unsafe_index_put", "aten.scatter", "aten.index_add")) or "backward" in name  # fmt: skip
    moved = node.args[2] if name.startswith(("aten.index_put", "aten._unsafe_index_put")) else (
        node.args[-1] if writes and "backward" not in name else (node.args[0] if "backward" in name else node))  # fmt: skip
    if isinstance(moved, list | tuple) or not isinstance(moved, Fx):
        moved = node
    shape = ctx.shape(moved) or (1,)
    dim = shape[-1]
    fmt, _ = ctx.width(moved)
    rows = max(ctx.numel(moved) // max(dim, 1), 1)
    table = ctx.shape(node)[0] if ctx.shape(node) else rows
    return Gather(
        lookups=rows, dim=dim, rows=table, outputs=0 if writes else rows, precision=fmt, name=node.name
    )


@rule("aten.clone", "aten.copy", "aten.repeat", "aten.roll", "aten.flip", "aten.masked_scatter",
      "aten.repeat_interleave")  # fmt: skip
def _copy(ctx: Context, node: Fx) -> Op:
    return Copy(size_bytes=ctx.nbytes(node), name=node.name)


@rule("aten.cat", "aten.stack", "aten.constant_pad_nd", "aten.tril", "aten.triu", "aten._to_copy",
      "aten.slice_scatter", "aten.select_scatter", "aten.diagonal_scatter", "aten.as_strided_scatter")  # fmt: skip
def _moving(ctx: Context, node: Fx) -> Op | None:
    """Data movement a loop writes element by element (it fuses like a pointwise map)."""
    if target_name(node) == "aten._to_copy" and ctx.val(node).dtype == ctx.val(node.args[0]).dtype:
        return None  # a move or a no-op cast
    op = pointwise(ctx, node)
    return rebuild(op, flops_per_element=0.0) if target_name(node) != "aten._to_copy" else op


def pointwise(ctx: Context, node: Fx) -> Op:
    """A pointwise map: its output's elements, and how many reads of that size its inputs take."""
    out = max(ctx.numel(node), 1)
    args: Any = node.args[0] if target_name(node) in ("aten.cat", "aten.stack") else node.all_input_nodes
    read = sum(ctx.numel(a) for a in args if isinstance(ctx.val(a), torch.Tensor))
    fmt, scale = ctx.width(node)
    return Elementwise(elements=out * scale, reads=max(1, round(read / out)) if read else 0, writes=1,
                       precision=fmt, name=node.name)  # fmt: skip


RULES["aten.silu"] = RULES["aten.gelu"] = pointwise


@rule("aten.native_dropout")
def _dropout(ctx: Context, node: Fx) -> Op:
    """Training dropout: reads its input, draws a mask and writes the scaled output and the mask
    (kept for the backward), one pass over the elements."""
    x = node.args[0]
    fmt, scale = ctx.width(x)
    return Elementwise(
        elements=max(ctx.numel(x), 1) * scale, reads=1, writes=2, precision=fmt, name=node.name
    )
