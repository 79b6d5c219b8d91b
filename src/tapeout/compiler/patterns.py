"""Patterns the lowering recognises across several nodes: the key/value heads that grouped-query
attention repeats before a plain attention call, and the mask that makes attention causal."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

Fx = torch.fx.Node
# The ops `repeat_kv` (Hugging Face) builds a repeated key or value from.
_REPEAT = ("aten.view", "aten.reshape", "aten._unsafe_view", "aten.clone", "aten.expand", "aten.unsqueeze")
MAX_MASK_ELEMENTS = 1 << 26  # a mask evaluated to recognise it: 64 Mi booleans at most


def _name(node: Fx) -> str:
    t = node.target
    return str(t._overloadpacket) if isinstance(t, torch._ops.OpOverload) else str(t)


def _chain(node: Any) -> list[Fx]:
    out = []
    while isinstance(node, Fx) and node.op == "call_function" and _name(node) in _REPEAT:
        out.append(node)
        node = node.args[0]
    return out


def kv_heads(k: Any, heads: int, shape: Callable[[Any], tuple[int, ...]]) -> int:
    """The key/value heads before a repeat to `heads` (`[B, Hkv, 1, S, D]` expanded to
    `[B, Hkv, n, S, D]` and reshaped), or `heads` when the keys were not repeated."""
    for node in _chain(k):
        s = shape(node)
        if len(s) == 5 and s[1] * s[2] == heads and s[2] > 1:
            return s[1]
    return heads


def repeat_nodes(attention: Fx) -> list[Fx]:
    """The copies that repeat keys and values for an attention call: the attention kernel reads
    the shared heads directly, so they fold into it."""
    out: list[Fx] = []
    for arg in attention.args[1:3]:
        chain = _chain(arg)
        if any(_name(n) == "aten.expand" for n in chain):
            out.extend(n for n in chain if _name(n) == "aten.clone")
    return out


def mask_kind(mask: Fx, size: Callable[[Any], int], q_len: int, kv_len: int) -> Literal["causal", "other"]:
    """Whether an attention mask computed from constants alone (positions, `arange`) is the causal
    triangle: it is evaluated on the CPU at the program's sizes. A mask that reads an input (a
    padding mask) is not known before run time and counts as full."""
    nodes = _ancestors(mask)
    if nodes is None or q_len * kv_len > MAX_MASK_ELEMENTS:
        return "other"
    graph = torch.fx.Graph()
    env: dict[Fx, Any] = {}
    for n in nodes:
        if "sym_size" in str(n.target):
            env[n] = size(n.meta["val"])
            continue
        env[n] = graph.node_copy(n, lambda a: env[a])
        env[n].args = torch.fx.node.map_aggregate(env[n].args, lambda a: _concrete(a, size))
        env[n].kwargs = {
            k: ("cpu" if k == "device" else _concrete(v, size)) for k, v in env[n].kwargs.items()
        }
    graph.output(env[mask])
    try:
        value = torch.fx.GraphModule(torch.nn.Module(), graph)()
    except Exception:  # a mask that does not evaluate on its own is not recognised
        return "other"
    if (
        not isinstance(value, torch.Tensor)
        or value.dtype != torch.bool
        or value.shape[-2:] != (q_len, kv_len)
    ):
        return "other"
    causal = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    return "causal" if bool((value == causal).all()) else "other"


def _concrete(value: Any, size: Callable[[Any], int]) -> Any:
    return size(value) if isinstance(value, torch.SymInt) else value


def _ancestors(node: Fx) -> list[Fx] | None:
    """The nodes `node` is computed from, in graph order, or None if one is an input or a
    parameter."""
    seen: dict[Fx, None] = {}
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        if n.op != "call_function":
            return None  # an input or a parameter
        if n.target is operator.getitem:
            return None
        seen[n] = None
        if "sym_size" not in str(n.target):  # a size: known at the program's sizes
            stack.extend(n.all_input_nodes)
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    return sorted(seen, key=order.__getitem__)
