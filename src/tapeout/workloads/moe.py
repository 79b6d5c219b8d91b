"""How tokens reach experts: the routing of a mixture-of-experts layer, stated, and the load it puts
on the busiest rank of the expert-parallel group.

A step of an expert-parallel layer waits for its most loaded rank: the expert GEMMs of every rank
run side by side and the combine cannot finish before the last one, so the time is that of the
rank whose experts receive the most rows, and the all-to-all moves that rank's payload. With
`tokens` tokens routed top-`k` over `E` experts and `L` experts on each of `R = E / L` ranks, a
rank's rows are random even when every expert is equally likely (a balancing loss holds the
expectation, not each batch). The model, in closed form (nothing is drawn per token):

- one token sends `X` of its `k` distinct picks to a given rank: hypergeometric, mean `k L / E`,
  variance `k (L/E) (1 - L/E) (E - k) / (E - 1)`; over `tokens` independent tokens a rank's rows
  have mean `tokens k L / E` and that variance times `tokens` (multinomial routing);
- a trained router adds a skew: expert popularity with coefficient of variation `skew` around
  `1 / E`; a rank's share of the popularity is a sum of `L` of the `E` experts', drawn without
  replacement, with variance `(skew / E)^2 L (E - L) / (E - 1)`, which scales with `tokens^2`;
- the `R` ranks' rows sum to every routed copy, so they are exchangeable normals with correlation
  `-1 / (R - 1)`: `X_r = mean + s (Z_r - mean(Z))` with `s = sd sqrt(R / (R - 1))`, whose expected
  maximum is `mean + sd sqrt(R / (R - 1)) g(R)`, `g(R)` the expected maximum of `R` independent
  standard normals. `g` is Blom's (1958) closed form `Phi^-1((R - 0.375) / (R + 0.25))`: 0.59,
  1.05, 1.43, 1.77, 2.07, 2.34 for 2, 4, ... 64 ranks, within 0.03 of the exact values (0.56,
  1.03, 1.42, 1.77, 2.07, 2.34); the `sqrt(2 ln R)` asymptote (1.18 to 2.88) overstates them by
  110 % at 2 ranks and still 23 % at 64. A few rows per rank (decode) make the count right-skewed: `g` takes the
  Cornish-Fisher term `gamma (g^2 - 1) / 6` with the binomial skewness `gamma` of the count. The
  maximum is at least the mean and at most `min(k, L)` rows per token. Against drawn routings
  (tests/test_moe_imbalance.py) this is within 1 % from a few dozen rows per rank up and within
  about 5 % down to one row per rank.

`skew` defaults to 0 (`SKEW`): no published coefficient of variation of expert popularity for the
routers of the validated runs was found, and benchmark runs that force balanced routing
(Megatron-Core's `moe_router_force_load_balancing`, random router logits) are multinomial
exactly. A stated skew (from a router's measured expert counts) adds to the multinomial term.

Routing is dropless (every copy is computed: Megatron-Core's and DeepSpeed's dropless MoE,
MegaBlocks) unless `capacity_factor` is set: an expert then takes at most `capacity_factor` times
its mean rows (GShard, Switch Transformer), the busiest rank at most `L` times that, and the copies
beyond are dropped (`dropped`, the expected share: `E[(X - C)+] / mean` of a normal expert load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

from tapeout.errors import TapeoutError
from tapeout.workloads.ops import Collective, Copy, Elementwise, Matmul, Op, rebuild

SKEW = 0.0  # coefficient of variation of expert popularity a trained router leaves (none found)
# An imbalance factor is kept to a multiple of 1/QUANTUM (rounded up): a payload scaled by it
# stays an exact binary fraction, so a graph instantiated from a template equals the one lowered
# directly, bit for bit.
QUANTUM = 1024
_NORMAL = NormalDist()


@lru_cache(maxsize=4096)
def extreme(ranks: int, skewness: float = 0.0) -> float:
    """Expected maximum, in standard deviations above the mean, of the rows of `ranks` ranks that
    share a fixed total (exchangeable, correlation -1 / (ranks - 1)), each with `skewness`.

    >>> extreme(1), round(extreme(2), 3), round(extreme(8), 2), round(extreme(8, 0.5), 2)
    (0.0, 0.834, 1.53, 1.63)
    """
    if ranks <= 1:
        return 0.0
    z = _NORMAL.inv_cdf((ranks - 0.375) / (ranks + 0.25))  # Blom's expected maximum of normals
    z += skewness * (z * z - 1) / 6  # Cornish-Fisher: a right-skewed count reaches further
    return z * math.sqrt(ranks / (ranks - 1))


@lru_cache(maxsize=4096)
def _rank_rows(
    experts: int, top_k: int, skew: float, tokens: float, local: int
) -> tuple[float, float, float]:
    """(mean, standard deviation, skewness) of the rows a rank holding `local` of `experts`
    experts gets when `tokens` tokens are routed top-`top_k` (see the module's note)."""
    e, k, n = experts, top_k, tokens
    share = local / e
    mean = n * k * local / e
    if local >= e or n <= 0:
        return mean, 0.0, 0.0
    per_token = k * share * (1 - share) * (e - k) / (e - 1)
    popularity = (skew / e) ** 2 * local * (e - local) / (e - 1)
    skewness = (1 - 2 * share) / math.sqrt(n * k * share * (1 - share))  # of the binomial count
    return mean, math.sqrt(n * per_token + (n * k) ** 2 * popularity), skewness


@dataclass(frozen=True, slots=True)
class RouterStats:
    """What a run states of its routing beyond the model (the plans' `router_skew` and
    `capacity_factor`): the skew a trained router leaves, and the experts' capacity (None:
    dropless)."""

    skew: float = SKEW
    capacity_factor: float | None = None


BALANCED = RouterStats()  # no skew stated, dropless


@dataclass(frozen=True, slots=True)
class Routing:
    """Each of `tokens` tokens picks `top_k` of `experts` experts.

    `uniform`: every expert equally likely a priori (a router trained with a load-balancing loss),
    picks independent across tokens, with expert popularity varying by `skew` (coefficient of
    variation; see the module's note). `capacity_factor`: None for dropless routing, else the cap
    on an expert's rows as a multiple of its mean. `local` and `reach` say how a sharded graph
    sees it: the experts one rank holds and the token groups whose tokens reach them.
    """

    experts: int
    top_k: int
    tokens: int  # tokens of one rank's batch before any exchange between ranks
    kind: Literal["uniform"] = "uniform"
    local: int | None = None  # experts the rank holds, once sharded (None: all)
    reach: int = 1  # token groups whose tokens reach the rank's experts, once sharded
    skew: float = SKEW
    capacity_factor: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.skew) and self.skew >= 0):
            raise TapeoutError(
                f"field 'skew': the coefficient of variation of expert popularity must be a finite "
                f"number >= 0, got {self.skew}"
            )
        cf = self.capacity_factor
        if cf is not None and not (math.isfinite(cf) and cf > 0):
            raise TapeoutError(
                f"field 'capacity_factor': an expert's capacity in multiples of its mean rows must be "
                f"a finite number > 0 (or none for dropless routing), got {cf}"
            )

    def ranks(self, local: int) -> int:
        """Ranks the experts are spread over, `local` on each."""
        return max(1, round(self.experts / local))

    def mean(self, tokens: float, local: int) -> float:
        """Rows a rank holding `local` experts gets on average when `tokens` tokens are routed.

        >>> Routing(experts=8, top_k=2, tokens=4096).mean(4096, 8)
        8192.0
        """
        return _rank_rows(self.experts, self.top_k, self.skew, float(tokens), local)[0]

    def busiest(self, tokens: float, local: int, *, capped: bool = True) -> float:
        """Expected rows of the busiest of the ranks holding `local` experts each, when `tokens`
        tokens are routed; with a capacity factor (and `capped`), at most the rank's capacity.

        >>> r = Routing(experts=32, top_k=3, tokens=1024)
        >>> r.busiest(8192, 32), round(r.busiest(8192, 4) / r.mean(8192, 4), 3)
        (24576.0, 1.025)
        """
        mean, sd, skewness = _rank_rows(self.experts, self.top_k, self.skew, float(tokens), local)
        most = min(mean + sd * extreme(self.ranks(local), skewness), tokens * min(self.top_k, local))
        if capped and self.capacity_factor is not None:
            most = min(most, self.capacity_factor * mean)
        return max(mean, most)

    def imbalance(self, tokens: float, local: int) -> float:
        """The busiest rank's rows over the mean (1 when one rank holds every expert), rounded up
        to a multiple of 1/`QUANTUM`.

        >>> Routing(experts=256, top_k=8, tokens=1).imbalance(8, 32)
        1.517578125
        """
        mean = self.mean(tokens, local)
        if self.ranks(local) == 1 or mean <= 0:
            return 1.0
        return math.ceil(self.busiest(tokens, local) / mean * QUANTUM) / QUANTUM

    def dropped(self, tokens: float) -> float:
        """Expected share of the routed copies beyond the experts' capacity when `tokens` tokens
        are routed (0 for dropless routing): `E[(X - C)+] / mean` of one expert's normal load.

        >>> Routing(experts=8, top_k=2, tokens=512, capacity_factor=1.0).dropped(512) > 0
        True
        """
        if self.capacity_factor is None:
            return 0.0
        e, k = self.experts, self.top_k
        mean = tokens * k / e
        var = tokens * (k / e) * (1 - k / e) + (tokens * k * self.skew / e) ** 2 * (e - 1) / e
        if mean <= 0 or var <= 0:
            return 0.0 if self.capacity_factor >= 1 else 1 - self.capacity_factor
        sd = math.sqrt(var)
        z = (self.capacity_factor * mean - mean) / sd
        over = sd * (_NORMAL.pdf(z) - z * (1 - _NORMAL.cdf(z)))
        return min(1.0, over / mean)

    def load(self, tokens: float, local: int) -> tuple[int, int]:
        """(experts of the busiest rank's `local` that receive tokens, rows each) when `tokens`
        tokens are routed over all the experts. With one rank (no expert parallelism) it is the
        mean; the busiest rank gets rows as if `imbalance` times the tokens had been routed.

        >>> Routing(experts=8, top_k=2, tokens=4096).load(4096, 8)
        (8, 1024)
        >>> Routing(experts=256, top_k=8, tokens=1).load(1, 256)
        (8, 1)
        """
        k, e = self.top_k, self.experts
        mean = self.mean(tokens, local)
        most = self.busiest(tokens, local, capped=False)
        busier = tokens * (most / mean if mean > 0 else 1.0)
        active = local * (1.0 - (1.0 - k / e) ** busier)
        groups = max(1, round(active))
        rows = math.ceil(self.busiest(tokens, local) / groups)
        return groups, max(1, rows)

    def place(self, op: Op, rows_dim: str, tokens: float, local: int) -> Op:
        """`op`, an expert op as this routing placed it (for `self.tokens` tokens from `reach`
        groups over the `local` experts a rank holds, or all of them), run by the busiest rank
        holding `local` experts when `tokens` tokens are routed: the experts that receive tokens,
        rows each (in field `rows_dim` of a matmul; the elements of a pointwise op); for an
        exchange (an all-to-all, or the sort of what it moved) its payload scaled by the tokens
        each group sends and by the busiest rank's `imbalance`."""
        if isinstance(op, Collective | Copy):
            field = "bytes_per_rank" if isinstance(op, Collective) else "size_bytes"
            before = self.tokens * self.reach
            base = getattr(op, field) / self.imbalance(before, self.local or self.experts)
            return rebuild(op, **{field: base * (tokens / before) * self.imbalance(tokens, local)})
        groups, rows = self.load(tokens, local)
        groups0, rows0 = self.load(self.tokens * self.reach, self.local or self.experts)
        if isinstance(op, Elementwise):
            return rebuild(op, elements=op.elements * groups * rows / (groups0 * rows0))
        assert isinstance(op, Matmul) and rows_dim in ("m", "k"), (op, rows_dim)
        return rebuild(op, groups=groups, m=rows) if rows_dim == "m" else rebuild(op, groups=groups, k=rows)
