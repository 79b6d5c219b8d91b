"""Recommendation models (DLRM family) on chips: inference batches, serving under a latency limit,
and training steps, composed from costed graphs.

A batch of the whole system's pairs is lowered once (`workloads.dlrm`: embedding lookups per
table, the all-to-all of pooled vectors, the dense part) and split for one chip by
`parallel.shard` under the tables' placement (`parallel.recsys`): the chip's share of the pairs
for the dense part, its share of each table's lookups, the hot rows its SRAM caches. Hot rows:
the shared SRAM holds the rows with the highest access probability over all tables
(`workloads.dlrm.hit_rates`). A training step adds the fused embedding backward and the dense
backward (`workloads.autodiff`), the gradient all-reduce of the dense part, and its share of the
protocol's periodic evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.parallel.memory import embedding_room, recsys_batch_fits
from tapeout.parallel.recsys import Placement, RecsysPlan, place
from tapeout.parallel.shard import Layout, shard
from tapeout.perf.cost import Cost
from tapeout.perf.rules import graph_cost, op_cost
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT, Precision, at_least_16
from tapeout.units import GB
from tapeout.workloads import autodiff, dlrm
from tapeout.workloads.graph import Graph
from tapeout.workloads.ops import AllReduce, OpKind
from tapeout.workloads.recsys import RecsysConfig

DEFAULT_BATCH_PAIRS = 65536  # pairs per offline batch when none is given (large-batch inference)
# Share of the shared SRAM (L2) that holds hot embedding rows; the rest serves the dense kernels.
HOT_ROW_SRAM_SHARE = 0.5


def _lookups(g: Graph, *, of: bool = True) -> Graph:
    """The embedding lookups of a graph (with `of=False`, the rest)."""
    return Graph(tuple(n for n in g.nodes if (n.op.kind == OpKind.GATHER) == of))


@lru_cache(maxsize=64)
def _template(model: RecsysConfig, layout: Layout, dense: Precision, embedding: Precision, training: bool
              ) -> tuple[Graph, Graph]:  # fmt: skip
    """What one chip computes and communicates of a batch of one pair per chip (see
    `dlrm.PAIRS`), lowered and sharded once per model, placement and precisions."""
    g = dlrm.forward(
        model, layout.dp, dense_precision=dense, embedding_precision=embedding, training=training
    )
    one = shard(g, layout)
    return one.compute(), one.communication()


@dataclass(eq=False, kw_only=True)
class RecsysSystem:
    """A recsys model on a system with its embedding placement and hot-row caches."""

    model: RecsysConfig
    system: System
    plan: RecsysPlan
    training: bool
    placement: Placement
    hits: tuple[float, ...]
    table_bytes: float = 0.0  # on the chip that holds the most, with their optimizer state
    _batches: dict[int, Cost] = field(default_factory=dict)

    @classmethod
    def of(cls, model: RecsysConfig, system: System, plan: RecsysPlan | None = None, *, training: bool = False) -> RecsysSystem:  # fmt: skip
        plan = plan or RecsysPlan()
        tables = plan.tables(training=training)
        chip = system.chip
        chip.require_formats({"precision": plan.dense(training=training)})
        room = embedding_room(chip.memory.capacity_gb * GB, tables, training=training)
        # Replicas would have to exchange sparse gradients: training shards its tables.
        sharding = "table" if training and plan.sharding == "auto" else plan.sharding
        placement = place(model, system.chips, room, tables, sharding)
        row_bytes = model.embedding_dim * BYTES_PER_ELEMENT[tables]
        hot = HOT_ROW_SRAM_SHARE * chip.sram_shared_bytes / row_bytes
        hits = (0.0,) * len(model.tables) if training else tuple(dlrm.hit_rates(model.tables, hot))
        state = BYTES_PER_ELEMENT[dlrm.ADAGRAD_STATE_PRECISION] if training else 0.0
        sizes = [t.rows * t.dim * (BYTES_PER_ELEMENT[tables] + state) for t in model.tables]
        return cls(model=model, system=system, plan=plan, training=training, placement=placement, hits=hits,
                   table_bytes=placement.most_held(sizes))  # fmt: skip

    def check_batch(self, pairs_per_chip: float) -> None:
        """Refuse a batch whose activations do not fit on a chip: per pair, the pooled vectors and
        the dense input at the wire format, and the widest layer's input and output (inference)
        or every layer's output, kept for the backward (training)."""
        m = self.model
        widths = [m.dense_features, *m.bottom_mlp, m.interaction_width, *m.top_mlp]
        act = BYTES_PER_ELEMENT[at_least_16(self.dense_precision)]
        pooled = (len(m.tables) + 1) * m.embedding_dim * act
        per_pair = pooled + act * (sum(widths) if self.training else 2 * max(widths))
        chip = self.system.chip
        recsys_batch_fits(chip.id, chip.memory.capacity_gb * GB, table_bytes=self.table_bytes, pairs=pairs_per_chip,
                          bytes_per_pair=per_pair, training=self.training)  # fmt: skip

    @property
    def dense_precision(self) -> Precision:
        return self.plan.dense(training=self.training)

    @property
    def embedding_precision(self) -> Precision:
        return self.plan.tables(training=self.training)

    def batch_cost(self, pairs: int) -> Cost:
        """Cost for every chip to run a batch of `pairs` pairs (inference), cached by size. A
        sustained serving load runs at the clock its TDP allows (as for LLM serving)."""
        cost = self._batches.get(pairs)
        if cost is None:
            if pairs < 1:
                raise TapeoutError(f"field 'batch': must be >= 1 pairs, got {pairs}")
            self.check_batch(pairs)
            compute, communication = _template(
                self.model, self.placement.layout(0, self.hits), self.dense_precision, self.embedding_precision,
                self.training,
            )  # fmt: skip
            work = graph_cost(compute, self.system, pairs=pairs)
            capped = self.system.capped(work.time_s, work.energy_j)
            if capped > work.time_s:
                work = Cost.of(capped, "compute", flops=work.flops, dram_bytes=work.dram_bytes)
            cost = work + graph_cost(communication, self.system, pairs=pairs)
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
        p99_latency_s=None, bound=cost.bound, sharding=rs.placement.kind,
    )  # fmt: skip


def p99_latency(
    rs: RecsysSystem, rate: float, pairs_per_sample: float, max_pairs: int, n: int, seed: int = 0
) -> float:
    """p99 latency of `n` Poisson samples at `rate` per chip, on a chip that batches whatever has
    queued, up to `max_pairs` pairs."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RecsysTrainingResult:
    samples_per_s: float
    step_time_s: float
    breakdown_s: dict[str, float]
    sharding: str

    def as_dict(self) -> dict[str, Any]:
        return {"samples_per_s": self.samples_per_s, "step_time_s": self.step_time_s,
                "breakdown_s": self.breakdown_s, "sharding": self.sharding}  # fmt: skip


def check_global_batch(global_batch: int, chips: int, field: str = "global_batch") -> None:
    """A step gives every chip a sample at least (the dense part is data-parallel)."""
    if global_batch < chips:
        raise TapeoutError(
            f"field '{field}': {global_batch:,} samples for {chips:,} chips; a training step needs at least "
            "one sample a chip"
        )


def train_step(rs: RecsysSystem, global_batch: int) -> RecsysTrainingResult:
    """One step: embeddings model-parallel (lookups of the global batch on the chips that own
    the tables, pooled vectors by all-to-all, gradients back the same way, the fused Adagrad
    backward on the touched rows), the dense part data-parallel (forward, input- and
    weight-gradient products, an all-reduce of its gradients). When the model's protocol
    evaluates periodically, each step also carries its share of those forward passes (at the
    training batch), as wall-clock throughputs do."""
    w = rs.system.chips
    check_global_batch(global_batch, w)
    if not rs.training:
        raise TapeoutError(
            "a training step needs a system placed for training (RecsysSystem.of(..., training=True))"
        )
    rs.check_batch(global_batch / w)
    sysm = dataclasses.replace(rs.system, load="training")
    fwd = dlrm.forward(rs.model, global_batch, dense_precision=rs.dense_precision,
                       embedding_precision=rs.embedding_precision, training=True)  # fmt: skip
    bwd = autodiff.backward(fwd)
    # Every chip runs the same dense part and exchange; the busiest chip's lookups set the pace.
    lookups = _lookups(fwd), _lookups(bwd)
    per_layout: dict[Layout, tuple[Cost, Cost]] = {}
    for c in range(w):
        layout = rs.placement.layout(c, rs.hits)
        if layout not in per_layout:
            per_layout[layout] = (
                graph_cost(shard(lookups[0], layout), sysm),
                graph_cost(shard(lookups[1], layout), sysm),
            )
    emb_fwd, emb_bwd = max(per_layout.values(), key=lambda x: x[0].time_s + x[1].time_s)
    layout = rs.placement.layout(0, rs.hits)
    f, b = shard(_lookups(fwd, of=False), layout), shard(_lookups(bwd, of=False), layout)
    dense_fwd = graph_cost(f.compute(), sysm)
    dense = dense_fwd + graph_cost(b.compute(), sysm)
    emb = emb_fwd + emb_bwd
    comm_fwd = graph_cost(f.communication(), sysm)
    comm = comm_fwd + graph_cost(b.communication(), sysm)
    grads = AllReduce(ranks=w, bytes_per_rank=rs.model.dense_params() * 2, name="dp.grads")
    allreduce = op_cost(grads, sysm).time_s if w > 1 else 0.0
    busy = dense.time_s + emb.time_s
    slow = sysm.capped(busy, dense.energy_j + emb.energy_j) / busy
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
        sharding=rs.placement.kind,
    )  # fmt: skip
