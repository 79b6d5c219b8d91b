"""The roles ATen ops play for numerics: which are matrix products and which of their operands
they reduce over which axis, which only move stored values, and how far apart two results are.
The emulator reads these tables; the op names are those of `torch.ops.aten` overload packets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

# The operands of each matrix product: (argument index, the axis it reduces over).
OPERANDS: dict[str, tuple[tuple[int, int], ...]] = {
    "mm": ((0, -1), (1, -2)),
    "bmm": ((0, -1), (1, -2)),
    "matmul": ((0, -1), (1, -2)),
    "addmm": ((1, -1), (2, -2)),
    "baddbmm": ((1, -1), (2, -2)),
    "linear": ((0, -1), (1, -1)),  # the weight is [out, in]
    "scaled_dot_product_attention": ((0, -1), (1, -1), (2, -2)),  # q.k over the head dim, p.v over keys
    "_scaled_dot_product_flash_attention_for_cpu": ((0, -1), (1, -1), (2, -2)),
    "_scaled_dot_product_flash_attention": ((0, -1), (1, -1), (2, -2)),
    "_scaled_dot_product_efficient_attention": ((0, -1), (1, -1), (2, -2)),
    "_scaled_dot_product_attention_math": ((0, -1), (1, -1), (2, -2)),
}
# Ops that only move or select stored values: their results need no rounding.
LAYOUT = frozenset(
    {
        *("view", "_unsafe_view", "reshape", "permute", "t", "transpose", "expand", "expand_as", "slice"),
        *("select", "unsqueeze", "squeeze", "alias", "clone", "contiguous", "split", "split_with_sizes"),
        *("unbind", "chunk", "narrow", "as_strided", "detach", "cat", "stack", "flatten", "unflatten"),
        *("movedim", "view_as", "index", "gather", "embedding", "getitem", "sym_size", "sym_numel"),
        *("lift_fresh_copy", "repeat"),
    }
)
# Ops whose first argument passes through unchanged in value (a weight stays a weight).
SAME_VALUES = LAYOUT - {"cat", "stack", "index", "gather", "embedding", "getitem"}
SELECTS = frozenset({"index", "gather", "embedding"})  # rows chosen by the input
EXPLICIT = frozenset({"_scaled_mm", "_scaled_grouped_mm"})  # ops that name their formats themselves
# Ops that allocate without initialising: their values are whatever memory held, in either run.
UNINITIALISED = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "empty_permuted"})
DROP = frozenset({"_assert_tensor_metadata"})  # dtype checks of the traced run: values here are fp32


def op_name(target: Any) -> str:
    """The short name of a node's target: `mm` for `aten.mm.default`, `getitem`."""
    packet = getattr(target, "overloadpacket", None)
    return str(getattr(packet if packet is not None else target, "__name__", target))


def operand_args(node: Any) -> tuple[Any, Any]:
    """The two matrix operands of a matrix-product node, by `OPERANDS` (the first two arguments
    for the products that name their formats themselves, `_int_mm` and `_scaled_mm`)."""
    spec = OPERANDS.get(op_name(node.target))
    first, second = (spec[0][0], spec[1][0]) if spec else (0, 1)
    return node.args[first], node.args[second]


def relative_error(value: Any, reference: Any) -> float:
    """||value - reference|| / ||reference|| over the floating tensors in both (nested tuples
    too); for integer and boolean results, the share of elements that differ.

    >>> relative_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 5.0])) == 1 / math.sqrt(34)
    True
    """
    pairs = list(zip(tensors(value), tensors(reference), strict=False))
    floats = [(a.double(), b.double()) for a, b in pairs if a.is_floating_point() and b.is_floating_point()]
    if floats:
        num = math.sqrt(sum(float(torch.sum((a - b) ** 2)) for a, b in floats))
        den = math.sqrt(sum(float(torch.sum(b**2)) for _, b in floats))
        return num / den if den > 0 else (0.0 if num == 0 else math.inf)
    differ = sum(int(torch.sum(a != b)) for a, b in pairs if a.shape == b.shape)
    total = sum(b.numel() for _, b in pairs)
    return differ / total if total else 0.0


def tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in `value`, nested tuples, lists and dicts included."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)
