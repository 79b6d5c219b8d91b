"""Recommendation models (DLRM family) on chips: inference batches, serving under a latency limit,
training steps, and the embedding sharding that places tables on chips.

A batch of `pairs` user-item pairs on one chip is costed op by op with the rules of
`tapeout.perf`:
- embedding gathers per table (`Gather`: whole access granules per row from DRAM, except the
  share of lookups that hit hot rows cached in the chip's shared SRAM), summed into one pooled
  vector per pair and table;
- the bottom MLP, the interaction (pairwise dot products as a batched matmul; DCN-v2 low-rank
  cross layers as two matmuls and a pointwise update each; a transformer over the user history)
  and the top MLP, as matmuls plus their pointwise activations;
- when tables live on other chips, the pooled vectors come back by all-to-all.
The gathers of all tables of one row width are one table-batched kernel. A training step adds
the fused embedding backward (fp32 rows and an element-wise Adagrad accumulator rewritten once
per distinct row), the dense backward, and its share of the protocol's periodic evaluation.
Hot rows: each table's ids follow a Zipf law of exponent `skew_alpha` (0: uniform); the SRAM
holds the rows with the highest access probability over all tables (water-filling on one
probability threshold), and a table's hit rate is the probability mass of its cached rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import BYTES_PER_ELEMENT, Precision
from tapeout.perf.cost import Cost
from tapeout.perf.power import energy_per_flop, power_capped
from tapeout.perf.rules import graph_cost, op_cost
from tapeout.perf.system import System
from tapeout.units import GB
from tapeout.workloads.ops import AllReduce, AllToAll, Attention, Elementwise, Gather, Matmul, Op
from tapeout.workloads.recsys import EmbeddingTable, RecsysConfig

Sharding = Literal["auto", "data", "table", "row", "column"]
SHARDINGS: tuple[Sharding, ...] = ("auto", "data", "table", "row", "column")
DEFAULT_BATCH_PAIRS = 65536  # pairs per offline batch when none is given (large-batch inference)
INDEX_BYTES = 4
# Memory per chip kept from the embeddings: the dense model, activations of a batch and the
# runtime (training adds optimizer state and gradients). Assumptions of the order the MLPerf
# submissions leave free, not fitted.
RESERVE_INFERENCE_BYTES = 4.0 * GB
RESERVE_TRAINING_BYTES = 8.0 * GB
# Share of the shared SRAM (L2) that holds hot embedding rows; the rest serves the dense kernels.
HOT_ROW_SRAM_SHARE = 0.5
# Training keeps fp32 master tables and an element-wise (exact) Adagrad accumulator of the same
# shape, also fp32: the MLPerf reference (TorchRec `torch.optim.Adagrad` -> FBGEMM EXACT_ADAGRAD)
# and NVIDIA's HugeCTR submissions (`RaggedStaticEmbeddingTable`: float table, float AdaGrad
# state of `emb_table_size_` elements) both do; mixed precision covers the MLPs and the wires.
TRAINING_EMBEDDING_PRECISION: Precision = "fp32"
ADAGRAD_STATE_PRECISION: Precision = "fp32"


# ---- hot rows ------------------------------------------------------------------------------
def _harmonic(n: float, alpha: float) -> float:
    """sum_{i=1..n} i^-alpha, by the Euler-Maclaurin approximation (exact enough beyond 10 rows)."""
    if n <= 0:
        return 0.0
    if n <= 64:
        return float(sum(i**-alpha for i in range(1, int(n) + 1)))
    if abs(alpha - 1.0) < 1e-9:
        return math.log(n) + 0.5772156649 + 1 / (2 * n)
    tail: float = (n ** (1 - alpha) - 1) / (1 - alpha) + 0.5 * (1 + n**-alpha)
    return tail


def hit_rates(tables: Sequence[EmbeddingTable], cache_rows: float) -> list[float]:
    """Share of each table's lookups that hit the cached rows, with the cache holding the
    `cache_rows` rows of highest access probability over all tables.

    >>> t = EmbeddingTable(rows=100, dim=8, pooling=1)
    >>> hit_rates([t, EmbeddingTable(rows=1000, dim=8, pooling=1)], 100)
    [1.0, 0.0]
    """
    return list(_hit_rates(tuple(tables), float(cache_rows)))


@lru_cache(maxsize=256)
def _hit_rates(tables: tuple[EmbeddingTable, ...], cache_rows: float) -> tuple[float, ...]:
    if cache_rows <= 0:
        return (0.0,) * len(tables)
    total = sum(t.rows for t in tables)
    if cache_rows >= total:
        return (1.0,) * len(tables)
    norms = [_harmonic(t.rows, t.skew_alpha) for t in tables]

    def cached(tau: float) -> list[float]:
        out = []
        for t, h in zip(tables, norms, strict=True):
            top = t.pooling / h  # access probability (per sample) of the hottest row
            if t.skew_alpha == 0:
                out.append(float(t.rows) if top >= tau else 0.0)
            else:
                out.append(
                    min(float(t.rows), (top / tau) ** (1 / t.skew_alpha)) if tau > 0 else float(t.rows)
                )
        return out

    lo, hi = 0.0, max(t.pooling / h for t, h in zip(tables, norms, strict=True)) * 2
    for _ in range(80):  # the threshold at which the cache is just full
        mid = (lo + hi) / 2
        if sum(cached(mid)) > cache_rows:
            lo = mid
        else:
            hi = mid
    counts = cached(hi)
    # Uniform tables are cached whole or not at the threshold; the room left goes to the densest
    # one not yet cached, in part.
    left = cache_rows - sum(counts)
    waiting = [i for i, t in enumerate(tables) if t.skew_alpha == 0 and counts[i] == 0]
    for i in sorted(waiting, key=lambda i: -tables[i].pooling / tables[i].rows):
        if left < 1:
            break
        counts[i] = min(float(tables[i].rows), left)
        left -= counts[i]
    return tuple(
        (c / t.rows if t.skew_alpha == 0 else min(1.0, _harmonic(c, t.skew_alpha) / h)) if c >= 1 else 0.0
        for t, c, h in zip(tables, counts, norms, strict=True)
    )


def distinct_rows(table: EmbeddingTable, draws: float) -> float:
    """Expected number of distinct rows among `draws` ids drawn from the table's Zipf law:
    sum over rows of 1 - exp(-draws * p_row), on log-spaced rank buckets.

    >>> t = EmbeddingTable(rows=10**6, dim=8)
    >>> round(distinct_rows(t, 10**6) / 10**6, 3)  # uniform: 1 - 1/e of the rows
    0.632
    >>> distinct_rows(t, 10) == distinct_rows(EmbeddingTable(rows=10**6, dim=8, skew_alpha=1.0), 10)
    False
    """
    if draws <= 0:
        return 0.0
    r = float(table.rows)
    if table.skew_alpha == 0:
        return r * -math.expm1(-draws / r)
    edges = np.unique(np.round(np.geomspace(1, r + 1, 512)))
    mid = np.sqrt(edges[:-1] * edges[1:])
    p = mid**-table.skew_alpha / _harmonic(r, table.skew_alpha)
    return float(np.sum(np.diff(edges) * -np.expm1(-draws * p)))


# ---- sharding ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShardPlan:
    """Which chips hold which share of each table: `owners[t]` maps chip -> share of rows."""

    kind: Sharding
    owners: tuple[dict[int, float], ...]
    chips: int

    @property
    def replicated(self) -> bool:
        return self.kind == "data"

    def lookups_share(self, chip: int) -> list[float]:
        """Share of every table's lookups served by `chip`."""
        if self.replicated:
            return [1.0 / self.chips] * len(self.owners)
        return [o.get(chip, 0.0) for o in self.owners]


def plan_sharding(
    model: RecsysConfig, chips: int, capacity_bytes: float, precision: Precision, sharding: Sharding = "auto"
) -> ShardPlan:
    """Place the tables on `chips` chips of `capacity_bytes` each for embeddings.

    `data` replicates every table; `table` puts whole tables on chips, the largest lookup load
    first onto the least loaded chip that has room, splitting by rows a table whose lookups
    exceed a chip's fair share or whose bytes exceed any chip's room; `row` splits every table's rows evenly; `column` splits every table's columns evenly
    (same memory and lookup balance as rows, more all-to-all messages). `auto` replicates when
    the tables fit on one chip, else shards by table.

    >>> from tapeout.workloads.models import get_model
    >>> plan = plan_sharding(get_model("dlrm-v2").config, 8, 20e9, "int8")
    >>> plan.kind, round(sum(sum(o.values()) for o in plan.owners))
    ('table', 26)
    """
    if sharding not in SHARDINGS:
        raise TapeoutError(f"field 'sharding': {sharding!r}; known: {', '.join(SHARDINGS)}")
    bpe = BYTES_PER_ELEMENT[precision]
    sizes = [t.rows * t.dim * bpe for t in model.tables]
    total = sum(sizes)
    if sharding == "auto":
        sharding = "data" if total <= capacity_bytes else "table"
    if sharding == "data":
        if total > capacity_bytes:
            raise TapeoutError(
                f"sharding 'data': the tables take {total / GB:.1f} GB, more than the {capacity_bytes / GB:.1f} GB "
                "each chip has for them"
            )
        return ShardPlan("data", tuple({c: 1.0 for c in range(chips)} for _ in sizes), chips)
    if total > capacity_bytes * chips:
        raise TapeoutError(
            f"the tables take {total / GB:.1f} GB; {chips} chips hold {capacity_bytes * chips / GB:.1f} GB for "
            f"embeddings ({capacity_bytes / GB:.1f} GB each) in any sharding"
        )
    if sharding in ("row", "column"):
        return ShardPlan(sharding, tuple({c: 1.0 / chips for c in range(chips)} for _ in sizes), chips)
    # Whole tables, heaviest lookup load first, onto the least loaded chip with room; a table
    # heavier than a chip's fair share of the lookups, or bigger than any chip's room, is split
    # by rows into enough equal shards (TorchRec's and HugeCTR's table-row-wise placement).
    work = [t.pooling * t.dim for t in model.tables]
    fair = sum(work) / chips
    load = [0.0] * chips
    used = [0.0] * chips
    owners: list[dict[int, float]] = [{} for _ in sizes]
    for i in sorted(range(len(sizes)), key=lambda i: -work[i]):
        parts = min(chips, max(1, round(work[i] / fair), math.ceil(sizes[i] / capacity_bytes)))
        while True:
            piece = sizes[i] / parts
            room = sorted(
                (c for c in range(chips) if used[c] + piece <= capacity_bytes),
                key=lambda c: (load[c], used[c]),
            )
            if len(room) >= parts or parts == chips:
                break
            parts += 1
        if len(room) < parts:
            raise TapeoutError(
                f"table {i} ({sizes[i] / GB:.2f} GB) finds no room on the chips: {capacity_bytes / GB:.1f} GB each, "
                f"{sum(used) / GB:.1f} GB already placed"
            )
        for c in room[:parts]:
            owners[i][c] = 1.0 / parts
            load[c] += work[i] / parts
            used[c] += piece
    return ShardPlan("table", tuple(owners), chips)


# ---- one batch -------------------------------------------------------------------------------
def _mlp(ops: list[Op], rows: int, first: int, widths: Sequence[int], precision: str) -> int:
    prev = first
    for w in widths:
        ops.append(Matmul(m=rows, n=w, k=prev, precision=precision, out_precision=precision))
        ops.append(Elementwise(elements=rows * w, reads=1, writes=1, precision=precision))  # bias and ReLU
        prev = w
    return prev


def dense_ops(model: RecsysConfig, rows: int, precision: str) -> list[Op]:
    """The bottom MLP, the interaction and the top MLP for `rows` pairs."""
    ops: list[Op] = []
    d = model.embedding_dim
    if model.bottom_mlp:
        _mlp(ops, rows, max(1, model.dense_features), model.bottom_mlp, precision)
    inter = model.interaction
    width = model.interaction_width
    n = len(model.tables) + (1 if model.bottom_mlp else 0)
    if inter.kind == "dot":
        ops.append(Matmul(m=n, n=n, k=d, groups=rows, precision=precision, out_precision=precision))
    elif inter.kind == "dcn":
        for _ in range(inter.layers):
            if inter.low_rank:
                ops.append(
                    Matmul(m=rows, n=inter.low_rank, k=width, precision=precision, out_precision=precision)
                )
                ops.append(
                    Matmul(m=rows, n=width, k=inter.low_rank, precision=precision, out_precision=precision)
                )
            else:
                ops.append(Matmul(m=rows, n=width, k=width, precision=precision, out_precision=precision))
            # x_{l+1} = x0 * (W x_l + b) + x_l
            ops.append(
                Elementwise(
                    elements=rows * width, reads=3, writes=1, flops_per_element=3, precision=precision
                )
            )
    else:
        assert inter.heads and inter.history_len
        length = inter.history_len
        for _ in range(inter.layers):
            ops.append(Matmul(m=rows * length, n=4 * d, k=d, precision=precision, out_precision=precision))
            ops.append(Attention(batch=rows, q_len=length, kv_len=length, heads=inter.heads, kv_heads=inter.heads,
                                 head_dim=max(1, d // inter.heads), causal=True, precision="bf16" if precision in ("int8", "fp8", "fp4") else precision))  # fmt: skip
            ops.append(Matmul(m=rows * length, n=d, k=d, precision=precision, out_precision=precision))
            ops.append(Matmul(m=rows * length, n=4 * d, k=d, precision=precision, out_precision=precision))
            ops.append(Matmul(m=rows * length, n=d, k=4 * d, precision=precision, out_precision=precision))
    _mlp(ops, rows, width, model.top_mlp, precision)
    return ops


@dataclass(eq=False, kw_only=True)
class RecsysSystem:
    """A recsys model on a system with its embedding placement and hot-row caches."""

    model: RecsysConfig
    system: System
    precision: Precision  # dense math
    embedding_precision: Precision
    shards: ShardPlan
    hits: tuple[float, ...]
    _batches: dict[int, Cost] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        model: RecsysConfig,
        system: System,
        *,
        precision: Precision = "bf16",
        embedding_precision: Precision | None = None,
        sharding: Sharding = "auto",
        training: bool = False,
    ) -> RecsysSystem:
        emb: Precision = embedding_precision or (TRAINING_EMBEDDING_PRECISION if training else precision)
        chip = system.chip
        reserve = RESERVE_TRAINING_BYTES if training else RESERVE_INFERENCE_BYTES
        capacity = chip.memory.capacity_gb * GB - reserve
        if training:
            # The Adagrad accumulator sits beside every table element.
            bpe = BYTES_PER_ELEMENT[emb]
            capacity *= bpe / (bpe + BYTES_PER_ELEMENT[ADAGRAD_STATE_PRECISION])
            if sharding == "auto":
                sharding = "table"  # replicas would have to exchange sparse gradients: shard instead
        shards = plan_sharding(model, system.chips, capacity, emb, sharding)
        # Hot rows a chip caches: of the tables it serves, in half of its shared SRAM.
        row_bytes = model.embedding_dim * BYTES_PER_ELEMENT[emb]
        hits = (
            tuple(hit_rates(model.tables, HOT_ROW_SRAM_SHARE * chip.sram_shared_bytes / row_bytes))
            if not training
            else tuple([0.0] * len(model.tables))
        )
        return cls(
            model=model, system=system, precision=precision, embedding_precision=emb, shards=shards, hits=hits
        )

    @property
    def wire_precision(self) -> Precision:
        """Pooled vectors and their gradients travel in 16 bits at least (narrow lookups are
        summed in wider types)."""
        return self.precision if BYTES_PER_ELEMENT[self.precision] >= 2 else "bf16"

    def embedding_ops(self, pairs_global: float, chip: int = 0, backward: bool = False) -> list[Op]:
        """Gathers one chip runs for a batch of `pairs_global` pairs over the whole system: one
        table-batched kernel per row width, as FBGEMM's TBE, HugeCTR's embedding collection and
        TensorRT's concatenated table launch all tables at once.

        The backward is the fused TBE backward: each lookup reads its bag's gradient, the sums
        land on the distinct rows touched, and each distinct row is rewritten once with its
        Adagrad accumulator (read-modify-write of both).
        """
        groups: dict[int, list[float]] = {}  # dim -> [lookups, cached lookups, bags, distinct rows]
        for t, s, h in zip(self.model.tables, self.shards.lookups_share(chip), self.hits, strict=True):
            if s <= 0:
                continue
            g = groups.setdefault(t.dim, [0.0, 0.0, 0.0, 0.0])
            bags = pairs_global * s
            g[0] += bags * t.pooling
            g[1] += bags * t.pooling * h
            g[2] += bags
            if backward:  # rows split evenly between a table's owners hold its distinct rows evenly
                g[3] += s * distinct_rows(t, pairs_global * t.pooling)
        rows = sum(t.rows for t in self.model.tables)
        ops: list[Op] = []
        for dim, (lookups, hit, bags, distinct) in groups.items():
            if not backward:
                ops.append(Gather(lookups=lookups, dim=dim, rows=rows, outputs=bags,
                                  precision=self.embedding_precision, cached=hit / lookups))  # fmt: skip
                continue
            ops += [
                Gather(lookups=lookups, dim=dim, rows=rows, outputs=0, precision=self.wire_precision),
                Gather(
                    lookups=distinct, dim=dim, rows=rows, outputs=distinct, precision=self.embedding_precision
                ),
                Gather(
                    lookups=distinct, dim=dim, rows=rows, outputs=distinct, precision=ADAGRAD_STATE_PRECISION
                ),
            ]
        return ops

    def _all_to_all(self, pairs_global: float, backward: bool = False) -> list[Op]:
        """Pooled vectors (and indices) between the chips that own tables and those that need them."""
        w = self.system.chips
        if w < 2 or self.shards.replicated:
            return []
        m = self.model
        width = BYTES_PER_ELEMENT[self.wire_precision]
        pooled = pairs_global / w * len(m.tables) * m.embedding_dim * width
        ops: list[Op] = [AllToAll(ranks=w, bytes_per_rank=pooled)]
        if not backward:
            ops.append(
                AllToAll(ranks=w, bytes_per_rank=pairs_global / w * m.lookups_per_sample * INDEX_BYTES)
            )
        return ops

    def batch_cost(self, pairs: int) -> Cost:
        """Cost for every chip to run a batch of `pairs` pairs (inference), cached by size."""
        cost = self._batches.get(pairs)
        if cost is None:
            if pairs < 1:
                raise TapeoutError(f"field 'batch': must be >= 1 pairs, got {pairs}")
            total = pairs * self.system.chips
            sysm, cal = self.system, self.system.cal
            cost = graph_cost(self.embedding_ops(total) + dense_ops(self.model, pairs, self.precision), sysm)
            # A sustained serving load runs at the clock its TDP allows (as for LLM serving).
            joules = cost.flops * energy_per_flop(sysm, self.precision, cal.serving_pj_per_flop)
            joules += cost.dram_bytes * cal.dram_pj_per_byte * 1e-12
            capped = power_capped(sysm, cost.time_s, joules)
            if capped > cost.time_s:
                cost = Cost.of(capped, "compute", flops=cost.flops, dram_bytes=cost.dram_bytes)
            if self.system.chips > 1:
                cost = cost + graph_cost(self._all_to_all(total), self.system)
            self._batches[pairs] = cost
        return cost

    def batch_time(self, pairs: int) -> float:
        return self.batch_cost(pairs).time_s


# ---- scenarios -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class RecsysInferenceResult:
    samples_per_s: float
    pairs_per_s: float
    batch_pairs: int
    batch_time_s: float
    p99_latency_s: float | None
    bound: str
    sharding: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples_per_s": self.samples_per_s, "pairs_per_s": self.pairs_per_s,
            "batch_pairs_per_chip": self.batch_pairs, "batch_time_s": self.batch_time_s,
            "p99_latency_s": self.p99_latency_s, "bound": self.bound, "sharding": self.sharding,
        }  # fmt: skip


def offline(
    rs: RecsysSystem, *, pairs_per_sample: float = 1.0, batch_pairs: int | None = None
) -> RecsysInferenceResult:
    """Throughput at a batch of `batch_pairs` pairs per chip (a large default)."""
    if pairs_per_sample <= 0:
        raise TapeoutError(f"field 'pairs_per_sample': must be > 0, got {pairs_per_sample}")
    b = batch_pairs or DEFAULT_BATCH_PAIRS
    cost = rs.batch_cost(b)
    pairs = b * rs.system.chips / cost.time_s
    return RecsysInferenceResult(
        samples_per_s=pairs / pairs_per_sample, pairs_per_s=pairs, batch_pairs=b, batch_time_s=cost.time_s,
        p99_latency_s=None, bound=cost.bound, sharding=rs.shards.kind,
    )  # fmt: skip


def _p99(rs: RecsysSystem, rate: float, pairs_per_sample: float, max_pairs: int, n: int, seed: int) -> float:
    """p99 latency of Poisson samples on one chip that batches whatever has queued, up to `max_pairs`."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    per_batch = max(1, int(max_pairs // pairs_per_sample))
    latency = np.empty(n)
    clock, i = 0.0, 0
    while i < n:
        clock = max(clock, arrivals[i])
        j = min(n, i + per_batch, int(np.searchsorted(arrivals, clock, side="right")))
        j = max(j, i + 1)
        clock += rs.batch_time(max(1, round((j - i) * pairs_per_sample)))
        latency[i:j] = clock - arrivals[i:j]
        i = j
    return float(np.percentile(latency, 99))


def server(
    rs: RecsysSystem, *, latency_limit_s: float, pairs_per_sample: float = 1.0, batch_pairs: int | None = None,
    samples: int = 20000,
) -> RecsysInferenceResult:  # fmt: skip
    """The highest Poisson rate of samples whose p99 latency meets the limit, with each chip
    batching the samples that have queued (up to `batch_pairs` pairs)."""
    if not latency_limit_s > 0:
        raise TapeoutError(f"field 'latency_limit_s': must be > 0 seconds, got {latency_limit_s}")
    top = offline(rs, pairs_per_sample=pairs_per_sample, batch_pairs=batch_pairs)
    max_pairs = top.batch_pairs
    if rs.batch_time(max(1, round(pairs_per_sample))) > latency_limit_s:
        raise TapeoutError(
            f"one sample of {pairs_per_sample:g} pairs takes longer than the {latency_limit_s:g} s latency limit"
        )
    chips = rs.system.chips
    lo, hi = 0.0, top.samples_per_s / chips
    for _ in range(14):
        mid = (lo + hi) / 2
        if _p99(rs, mid, pairs_per_sample, max_pairs, samples, 0) <= latency_limit_s:
            lo = mid
        else:
            hi = mid
    p99 = _p99(rs, lo, pairs_per_sample, max_pairs, samples, 0) if lo > 0 else math.inf
    return RecsysInferenceResult(
        samples_per_s=lo * chips, pairs_per_s=lo * chips * pairs_per_sample, batch_pairs=max_pairs,
        batch_time_s=top.batch_time_s, p99_latency_s=p99, bound=top.bound, sharding=rs.shards.kind,
    )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class RecsysTrainingResult:
    samples_per_s: float
    step_time_s: float
    breakdown_s: dict[str, float]
    sharding: str

    def as_dict(self) -> dict[str, Any]:
        return {"samples_per_s": self.samples_per_s, "step_time_s": self.step_time_s,
                "breakdown_s": self.breakdown_s, "sharding": self.sharding}  # fmt: skip


def train_step(rs: RecsysSystem, global_batch: int) -> RecsysTrainingResult:
    """One step: embeddings model-parallel (lookups of the global batch on the chips that own
    the tables, pooled vectors by all-to-all, gradients back the same way, the fused Adagrad
    backward on the touched rows), the dense part data-parallel (forward, input- and
    weight-gradient products, an all-reduce of its gradients). When the model's protocol
    evaluates periodically, each step also carries its share of those forward passes (at the
    training batch), as wall-clock throughputs do."""
    w = rs.system.chips
    if global_batch < w:
        raise TapeoutError(f"field 'global_batch': {global_batch} samples for {w} chips")
    local = global_batch // w
    sysm, cal = rs.system, rs.system.cal
    fwd = dense_ops(rs.model, local, rs.precision)
    bwd: list[Op] = []
    for op in fwd:
        if isinstance(op, Matmul):
            bwd.append(Matmul(m=op.m, n=op.k, k=op.n, groups=op.groups, precision=op.precision))
            bwd.append(Matmul(m=op.k, n=op.n, k=op.m, groups=op.groups, precision=op.precision))
        else:
            bwd += [op, op]
    dense_fwd = graph_cost(fwd, sysm)
    dense = dense_fwd + graph_cost(bwd, sysm)
    # The busiest chip's tables.
    emb_fwd, emb_bwd = max(
        ((graph_cost(rs.embedding_ops(global_batch, c), sysm),
          graph_cost(rs.embedding_ops(global_batch, c, backward=True), sysm)) for c in range(w)),
        key=lambda fb: fb[0].time_s + fb[1].time_s,
    )  # fmt: skip
    emb = emb_fwd + emb_bwd
    comm_fwd = graph_cost(rs._all_to_all(global_batch), sysm)
    comm = comm_fwd + graph_cost(rs._all_to_all(global_batch, backward=True), sysm)
    grads = AllReduce(ranks=w, bytes_per_rank=rs.model.dense_params() * 2) if w > 1 else None
    allreduce = op_cost(grads, sysm).time_s if grads is not None else 0.0
    busy = dense.time_s + emb.time_s
    joules = (
        dense.flops * energy_per_flop(sysm, rs.precision, cal.training_pj_per_flop)
        + (dense.dram_bytes + emb.dram_bytes) * cal.dram_pj_per_byte * 1e-12
    )
    slow = power_capped(sysm, busy, joules) / busy
    # The dense gradient all-reduce overlaps the embedding backward (HugeCTR's overlap); the
    # all-to-alls sit between the embedding and dense stages.
    exposed = max(0.0, allreduce - emb.time_s / 2)
    ev = rs.model.evaluation
    evaluation = 0.0
    if ev is not None:
        forward = (dense_fwd.time_s + emb_fwd.time_s) * slow + comm_fwd.time_s
        evaluation = forward * ev.samples / ev.every_samples
    step = busy * slow + comm.time_s + exposed + evaluation
    return RecsysTrainingResult(
        samples_per_s=global_batch / step, step_time_s=step,
        breakdown_s={"dense": dense.time_s * slow, "embeddings": emb.time_s * slow, "all_to_all": comm.time_s,
                     "exposed_all_reduce": exposed, "evaluation": evaluation},
        sharding=rs.shards.kind,
    )  # fmt: skip
