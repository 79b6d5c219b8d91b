"""Cost rules per op kind and the interpreter that sums them."""

from tapeout.perf import attention, collective, matmul, memory  # noqa: F401  (register the rules)
from tapeout.perf.calibration import Calibration, calibration_for
from tapeout.perf.cost import Cost
from tapeout.perf.rules import MissingRuleError, cost_rule, graph_cost, op_cost
from tapeout.perf.system import System

__all__ = [
    "Calibration",
    "Cost",
    "MissingRuleError",
    "System",
    "calibration_for",
    "cost_rule",
    "graph_cost",
    "op_cost",
]
