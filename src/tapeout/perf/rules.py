"""The cost-rule registry and the one interpreter that walks a graph and adds the results."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from tapeout.perf.cost import Cost
from tapeout.perf.system import System
from tapeout.workloads.graph import Graph
from tapeout.workloads.ops import Op, OpKind

OpT = TypeVar("OpT", bound=Op)
Rule = Callable[[Op, System], Cost]

_RULES: dict[OpKind, Rule] = {}


class MissingRuleError(LookupError):
    pass


def cost_rule(*kinds: OpKind) -> Callable[[Callable[[OpT, System], Cost]], Callable[[OpT, System], Cost]]:
    """Register the cost rule for one or more op kinds."""

    def register(fn: Callable[[OpT, System], Cost]) -> Callable[[OpT, System], Cost]:
        for kind in kinds:
            if kind in _RULES:
                raise RuntimeError(f"two cost rules for {kind}")
            _RULES[kind] = fn  # type: ignore[assignment]
        return fn

    return register


def op_cost(op: Op, system: System) -> Cost:
    """The cost of one op on one system.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.workloads.ops import Matmul
    >>> c = op_cost(Matmul(m=4096, n=4096, k=4096), System.of(get_chip("h100-sxm")))
    >>> c.flops == 2 * 4096**3, c.bound
    (True, 'compute')
    """
    rule = _RULES.get(op.kind)
    if rule is None:
        raise MissingRuleError(
            f"no cost rule for op {op.name or type(op).__name__!r} of kind {getattr(op.kind, 'value', op.kind)}"
        )
    return rule(op, system)


def graph_cost(graph: Graph | Iterable[Op], system: System, **sizes: int) -> Cost:
    """A graph's nodes run one after another: their costs add, each `count` times. With `sizes`,
    the graph is costed at those dynamic dimensions (`graph.at(**sizes)`, without building it).

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.workloads.graph import Node
    >>> from tapeout.workloads.ops import Matmul
    >>> g = Graph((Node(Matmul(m=4096, n=4096, k=4096), count=3),))
    >>> sys = System.of(get_chip("h100-sxm"))
    >>> graph_cost(g, sys).time_s == 3 * op_cost(g.nodes[0].op, sys).time_s
    True
    """
    if not isinstance(graph, Graph):
        return Cost.total(op_cost(op, system) for op in graph)
    nodes = graph.nodes
    if len(nodes) == 1:  # an attention call: its cost as is
        n = nodes[0]
        return _scaled(op_cost(n.op_at(sizes) if sizes else n.op, system), n.count)
    if sizes:
        return Cost.total(_scaled(op_cost(n.op_at(sizes), system), n.count) for n in nodes)
    return Cost.total(_scaled(op_cost(n.op, system), n.count) for n in nodes)


def _scaled(cost: Cost, count: float) -> Cost:
    return cost if count == 1 else cost * count
