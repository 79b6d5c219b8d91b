"""How tokens reach experts: the routing of a mixture-of-experts layer, stated, and the load it puts
on the experts one rank holds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tapeout.workloads.ops import Elementwise, Matmul, Op, rebuild


@dataclass(frozen=True, slots=True)
class Routing:
    """Each of `tokens` tokens picks `top_k` of `experts` experts.

    `uniform`: every expert equally likely, picks independent across tokens (a router trained
    with a load-balancing loss, in expectation). The load of the experts a rank holds is its
    expectation: of `local` experts, those that receive at least one token, each with an equal
    share of the rows.
    """

    experts: int
    top_k: int
    tokens: int  # tokens of one rank's batch before any exchange between ranks
    kind: Literal["uniform"] = "uniform"
    local: int | None = None  # experts the rank holds, once sharded (None: all)
    reach: int = 1  # token groups whose tokens reach the rank's experts, once sharded

    def load(self, tokens: float, local: int) -> tuple[int, int]:
        """(experts of the `local` held that receive tokens, rows each) when `tokens` tokens are
        routed over all the experts.

        >>> Routing(experts=8, top_k=2, tokens=4096).load(4096, 8)
        (8, 1024)
        >>> Routing(experts=256, top_k=8, tokens=1).load(1, 32)
        (1, 1)
        """
        k, e = self.top_k, self.experts
        active = local * (1.0 - (1.0 - k / e) ** tokens)
        groups = max(1, round(active))
        rows = math.ceil(tokens * k * local / (e * groups))
        return groups, max(1, rows)

    def place(self, op: Op, rows_dim: str, tokens: float, local: int) -> Op:
        """`op`, an expert op as this routing placed it (for `self.tokens` tokens from `reach`
        groups over the `local` experts a rank holds, or all of them), run by a rank that holds
        `local` experts when `tokens` tokens are routed: the experts that receive tokens, rows
        each (in field `rows_dim` of a matmul; the elements of a pointwise op)."""
        groups, rows = self.load(tokens, local)
        groups0, rows0 = self.load(self.tokens * self.reach, self.local or self.experts)
        if isinstance(op, Elementwise):
            return rebuild(op, elements=op.elements * groups * rows / (groups0 * rows0))
        assert isinstance(op, Matmul) and rows_dim in ("m", "k"), (op, rows_dim)
        return rebuild(op, groups=groups, m=rows) if rows_dim == "m" else rebuild(op, groups=groups, k=rows)
