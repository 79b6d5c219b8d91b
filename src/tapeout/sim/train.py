"""One training step of a transformer: time, memory per chip, MFU, and what the time went to,
composed from costed graphs.

Each kind of layer is lowered once (`workloads.transformer`), differentiated
(`workloads.autodiff`), split for one chip (`parallel.shard`) and costed (`perf.graph_cost`)
for one micro-batch of `micro_batch x seq_len / cp` tokens; the costs are cached by the plan
fields they depend on. This module composes them in time:
- per micro-batch: the forward, the backward, what recomputation runs again (`full`: each
  layer's forward, `selective`: the core attention, Korthikanti et al. 2022), the output head,
  at the clock the chip's TDP sustains (`perf.power`); the tensor- and expert-parallel
  collectives (with `tp_overlap` all but one chunk of the sequence-parallel ones hidden under
  the matmuls; with `ep_overlap` the all-to-alls under another micro-batch's compute); the
  context-parallel ring where the attention does not hide it; a point-to-point transfer per
  micro-batch and chunk boundary (hidden under the next chunk when interleaved);
- the pipeline: `m` micro-batches through `pp` stages of `vpp` interleaved chunks take
  `(m + (pp - 1) / vpp)` micro-batch times (1F1B; Narayanan et al. 2021);
- data parallelism: the gradient reduction behind the backward, ZeRO-3's gathers behind the
  compute they prefetch for (`parallel.training`), and the optimizer step.

Model FLOPs: three times the forward graph's matmul and attention FLOPs over the whole model
(6 x active non-embedding parameters plus causal attention, per token); hardware FLOPs add what
recomputation runs again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tapeout.parallel.fields import as_dict
from tapeout.parallel.memory import Memory, saved_bytes, training_memory
from tapeout.parallel.shard import Layout, shard
from tapeout.parallel.training import (
    RECOMPUTE,
    AttentionKernel,
    Holders,
    TrainingPlan,
    communicator,
    exposed_gradient_sync,
    gradient_sync,
    holders,
)
from tapeout.perf.cost import ZERO, Cost
from tapeout.perf.rules import graph_cost, op_cost
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT, Numerics, Precision
from tapeout.units import GB
from tapeout.workloads import autodiff, transformer
from tapeout.workloads.graph import Graph, Role
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.moe import RouterStats, Routing
from tapeout.workloads.ops import AllToAll, OpKind, SendRecv


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingResult:
    step_time_s: float
    tokens_per_s: float
    mfu: float
    hfu: float
    model_flops: float
    breakdown_s: dict[str, float]
    memory: Memory
    plan: TrainingPlan
    dp: int
    micro_batches: int
    moe_dropped: float = 0.0  # share of the routed copies past the experts' capacity (0: dropless)

    @property
    def memory_gb(self) -> dict[str, float]:
        return self.memory.parts_gb()

    def as_dict(self) -> dict[str, Any]:
        plan = {**as_dict(self.plan), "dp": self.dp, "micro_batches": self.micro_batches}
        return {
            "step_time_s": self.step_time_s, "tokens_per_s": self.tokens_per_s, "mfu": self.mfu,
            "hfu": self.hfu, "model_flops_per_step": self.model_flops, "breakdown_s": self.breakdown_s,
            "memory_per_chip_gb": self.memory_gb, "plan": plan, "moe_dropped_share": self.moe_dropped,
        }  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class _Shape:
    """What one layer's cost depends on: the plan's splits of a micro-batch, its formats and the
    software's overlaps. One object per distinct shape (`of` is cached), so it hashes by identity."""

    layout: Layout
    numerics: Numerics
    micro_batch: int
    seq_len: int
    attention: AttentionKernel
    tp_overlap: bool
    ep_overlap: bool
    router: RouterStats

    @classmethod
    def of(cls, plan: TrainingPlan, seq_len: int) -> _Shape:
        p = plan
        return _shape(p.tp, p.sequence_parallel, p.cp, p.ep, p.micro_batch, seq_len, p.attention, p.tp_overlap,
                      p.ep_overlap, p.precision, p.router_skew, p.capacity_factor)  # fmt: skip

    @property
    def tokens(self) -> int:
        """Tokens of one micro-batch on one rank."""
        return self.micro_batch * self.seq_len // self.layout.cp


@lru_cache(maxsize=4096)
def _shape(tp: int, sp: bool, cp: int, ep: int, mb: int, seq_len: int, attention: AttentionKernel, tp_overlap: bool,
           ep_overlap: bool, precision: Precision, skew: float, capacity: float | None) -> _Shape:  # fmt: skip
    plan = TrainingPlan(tp=tp, sequence_parallel=sp, cp=cp, ep=ep, micro_batch=mb, attention=attention,
                        tp_overlap=tp_overlap, ep_overlap=ep_overlap, precision=precision)  # fmt: skip
    return _Shape(plan.layout, plan.numerics, mb, seq_len, attention, tp_overlap, ep_overlap,
                  RouterStats(skew, capacity))  # fmt: skip


@lru_cache(maxsize=64)
def _training(system: System) -> System:
    """`system` under a training load (the frameworks' efficiency figure)."""
    return system if system.load == "training" else dataclasses.replace(system, load="training")


@dataclass(frozen=True, slots=True)
class _Kind:
    """One layer of one kind, one micro-batch, one chip."""

    forward: Cost  # compute and memory of the layer's token-parallel ops
    backward: Cost
    attention: Cost  # the core attention forward (what selective recompute repeats)
    attention_backward: Cost
    comm_forward: Cost  # tensor- and expert-parallel communication, after overlap
    comm_backward: Cost
    ring_forward_s: float  # context-parallel key/value passing
    ring_backward_s: float


@lru_cache(maxsize=1024)
def model_flops_per_token(model: LLMConfig, seq_len: int) -> float:
    """Three times the forward graph's FLOPs (matmuls and attention) per token of a step.

    >>> from tapeout.workloads.models import get_model
    >>> f = model_flops_per_token(get_model("llama-2-7b").config, 4096)
    >>> round(f / 1e9, 1)
    42.9
    """
    g = transformer.forward(model, batch=1, seq_len=seq_len, numerics=TrainingPlan().numerics)
    work = sum(n.flops for n in g.nodes if n.op.kind in (OpKind.MATMUL, OpKind.ATTENTION))
    return 3.0 * work / seq_len


def _shortened(cost: Cost, time_s: float) -> Cost:
    """`cost` with the same traffic, of which only `time_s` is waited for."""
    f = time_s / cost.time_s if cost.time_s else 0.0
    return dataclasses.replace(
        cost, time_s=time_s, compute_s=cost.compute_s * f, memory_s=cost.memory_s * f,
        network_s=cost.network_s * f, latency_s=cost.latency_s * f,
    )  # fmt: skip


def _on(system: System, ranks: int) -> System:
    """The system a collective of `ranks` runs on (a larger one when a case has fewer chips)."""
    if ranks <= system.chips:
        return system
    return System.of(system.chip, ranks, calibration=system.cal, load=system.load)


@lru_cache(maxsize=2048)
def _graphs(model: LLMConfig, shape: _Shape, moe: bool) -> tuple[Graph, Graph, Graph, Graph]:
    """Sharded (layer forward, layer backward, attention forward, attention backward)."""
    lay, num = shape.layout, shape.numerics
    fwd = transformer.layer(model, shape.tokens, num, moe=moe, residual_kernels=True, router=shape.router)
    att = transformer.attention(model, batch=shape.micro_batch, q_len=shape.seq_len, kv_len=shape.seq_len,
                                numerics=num, kernel=shape.attention)  # fmt: skip
    if shape.attention == "unfused":  # what it keeps for the backward
        att = att + transformer.unfused_scores(model, shape.micro_batch, shape.seq_len, num)
    return (
        shard(fwd, lay),
        shard(autodiff.backward(fwd), lay),
        shard(att, lay),
        shard(autodiff.backward(att), lay),
    )


def layer_graphs(model: LLMConfig, plan: TrainingPlan, seq_len: int) -> tuple[Graph, Graph]:
    """One chip's share of one micro-batch through the model's most common layer kind under
    `plan`, with its attention: (forward, backward) compute graphs, as `train_step` costs them."""
    shape = _Shape.of(plan, seq_len)
    moe = max(transformer.census(model), key=lambda kc: kc[1])[0]
    fwd, bwd, att, att_b = _graphs(model, shape, moe)
    return Graph.join([fwd, att]).compute(), Graph.join([bwd, att_b]).compute()


@lru_cache(maxsize=8192)
def _layer_cost(model: LLMConfig, system: System, shape: _Shape, moe: bool) -> _Kind:
    lay = shape.layout
    fwd, bwd, att, att_b = _graphs(model, shape, moe)
    forward, backward = graph_cost(fwd.compute(), system), graph_cost(bwd.compute(), system)
    comm = []
    for g in (fwd, bwd):
        nodes = g.communication().nodes
        tp_part = graph_cost(
            Graph(tuple(n for n in nodes if not isinstance(n.op, AllToAll))), _on(system, lay.tp)
        )
        a2a = graph_cost(
            Graph(tuple(n for n in nodes if isinstance(n.op, AllToAll))), _on(system, lay.tp * lay.ep)
        )
        if shape.tp_overlap:
            # Split in `tp` chunks, each exchanged under the matmul of the one before: the first
            # chunk, and whatever the matmuls are too short to cover, stay exposed.
            hidden = min(tp_part.time_s * (1 - 1 / lay.tp), forward.time_s)
            tp_part = _shortened(tp_part, tp_part.time_s - hidden)
        if shape.ep_overlap:
            # Two micro-batches interleaved: the dispatch and combine of one run under the
            # other's forward and backward; half of that compute covers each direction.
            a2a = _shortened(a2a, a2a.time_s - min(a2a.time_s, (forward.time_s + backward.time_s) / 2))
        comm.append(tp_part + a2a)
    # A ring that leaves the scale-up domain runs at the pace of its network hops.
    hop = system
    if lay.tp * lay.cp > system.scale_up_domain:
        hop = System.of(system.chip, 2, chips_per_node=1, calibration=system.cal, load=system.load,
                        scale_out_gbit_s_per_chip=system.nic_bandwidth * 8 / 1e9)  # fmt: skip
    return _Kind(
        forward=forward, backward=backward, attention=graph_cost(att.compute(), system),
        attention_backward=graph_cost(att_b.compute(), system), comm_forward=comm[0], comm_backward=comm[1],
        ring_forward_s=graph_cost(att.communication(), hop).time_s,
        ring_backward_s=graph_cost(att_b.communication(), hop).time_s,
    )  # fmt: skip


@lru_cache(maxsize=8192)
def _ends_cost(model: LLMConfig, system: System, shape: _Shape, embedding: bool) -> tuple[Cost, Cost]:
    """The output head (and with one stage the embedding), forward and backward, one micro-batch:
    (compute, communication)."""
    num = shape.numerics
    parts = [transformer.head(model, shape.tokens, num)]
    if embedding:
        parts.append(transformer.embedding(model, shape.tokens, num))
    fwd = Graph.join(parts)
    g = shard(fwd + autodiff.backward(fwd), shape.layout)
    return graph_cost(g.compute(), system), graph_cost(g.communication(), _on(system, shape.layout.tp))


@lru_cache(maxsize=4096)
def _layer_stats(model: LLMConfig, shape: _Shape, moe: bool) -> tuple[float, float, tuple[float, ...]]:
    """One layer of a kind on one chip: (dense parameters, expert parameters, the bytes it keeps
    for the backward of one micro-batch under each recompute choice)."""
    fwd, _, att, _ = _graphs(model, shape, moe)
    dense = experts = 0.0
    for t in fwd.live:
        if t.role == Role.WEIGHT:
            if any(s.axis == "ep" for s in t.split):
                experts += t.elements * t.count
            else:
                dense += t.elements * t.count
    return dense, experts, tuple(saved_bytes(fwd + att, r) for r in RECOMPUTE)


@lru_cache(maxsize=1024)
def _ends_params(model: LLMConfig, shape: _Shape) -> tuple[float, float]:
    """Parameters per chip of the embedding and of the output head."""
    num = shape.numerics
    ends = (transformer.embedding(model, 1, num), transformer.head(model, 1, num))
    return tuple(shard(e, shape.layout).weight_params() for e in ends)  # type: ignore[return-value]


def _memory(model: LLMConfig, system: System, plan: TrainingPlan, dp: int, shape: _Shape, layers_only: bool) -> tuple[Memory, tuple[Holders, Holders]]:  # fmt: skip
    """Memory per chip of the busiest stage, and its weights by the ranks that hold them."""
    share = plan.stage_layers(model) / model.num_hidden_layers
    dense = experts = per_layer = act = 0.0
    which = RECOMPUTE.index(plan.recompute)
    for moe, count in transformer.census(model):
        d, e, saved = _layer_stats(model, shape, moe)
        dense, experts = dense + d * count * share, experts + e * count * share
        per_layer += (d + e) * count / model.num_hidden_layers
        act += saved[which] * count / model.num_hidden_layers
    if not layers_only:
        ends = _ends_params(model, shape)
        dense += sum(ends) if plan.pp == 1 else max(ends)  # the busiest stage holds one end
    groups = holders(plan, dp, dense, experts)
    chip = system.chip
    mem = training_memory(
        chip.id, chip.memory.capacity_gb * GB, plan=plan, groups=groups,
        weight_bytes=BYTES_PER_ELEMENT[plan.numerics.stored], layer_params=per_layer,
        layer_activations=act, stage_layers=plan.stage_layers(model),
    )  # fmt: skip
    return mem, groups


@lru_cache(maxsize=8192)
def _micro_batch(model: LLMConfig, system: System, shape: _Shape, per_stage: int, recompute: str, embedding: bool,
                 layers_only: bool) -> tuple[Cost, Cost, Cost, Cost, float]:  # fmt: skip
    """One micro-batch on one chip of the busiest stage (`per_stage` layers): (the layers'
    forward, their backward with what it recomputes, the ends of the model (the embedding too
    with one stage), the tensor- and expert-parallel communication, the exposed ring)."""
    fwd = bwd = comm = ZERO
    ring = 0.0
    for moe, count in transformer.census(model):
        k = _layer_cost(model, system, shape, moe)
        share = per_stage * count / model.num_hidden_layers
        extra = {"none": ZERO, "selective": k.attention, "full": k.forward + k.attention}[recompute]
        fwd = fwd + (k.forward + k.attention) * share
        bwd = bwd + (k.backward + k.attention_backward + extra) * share
        again = k.comm_forward if recompute == "full" else ZERO
        comm = comm + (k.comm_forward + k.comm_backward + again) * share
        # Ring passes hide behind attention.
        ring += share * (max(0.0, k.ring_forward_s - k.attention.time_s)
                         + max(0.0, k.ring_backward_s - k.attention_backward.time_s))  # fmt: skip
    ends = ZERO
    if not layers_only:
        ends, ends_comm = _ends_cost(model, system, shape, embedding)
        comm = comm + ends_comm
    return fwd, bwd, ends, comm, ring


def plan_memory(
    model: LLMConfig, system: System, plan: TrainingPlan, *, seq_len: int, global_batch: int,
    layers_only: bool = False,
) -> Memory:  # fmt: skip
    """Memory per chip of the busiest stage under `plan` (checked against the model and the
    chips, not against the memory it needs)."""
    dp, _ = plan.resolve(model, system.chips, seq_len, global_batch)
    return _memory(model, _training(system), plan, dp, _Shape.of(plan, seq_len), layers_only)[0]


def train_step(
    model: LLMConfig,
    system: System,
    plan: TrainingPlan,
    *,
    seq_len: int,
    global_batch: int,
    layers_only: bool = False,
    check_memory: bool = True,
) -> TrainingResult:
    """Time, throughput, MFU and memory of one step.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.workloads.models import get_model
    >>> r = train_step(get_model("llama-3.1-8b").config, System.of(get_chip("h100-sxm"), 8),
    ...                TrainingPlan(tp=1, recompute="selective", zero=2), seq_len=4096, global_batch=64)
    >>> 0.2 < r.mfu < 0.7
    True
    """
    system.chip.require_formats({"precision": plan.numerics.compute})
    dp, n_mb = plan.resolve(model, system.chips, seq_len, global_batch)
    system = _training(system)
    shape = _Shape.of(plan, seq_len)
    mem, groups = _memory(model, system, plan, dp, shape, layers_only)
    if check_memory:
        mem.require_fit("the plan", plan.describe(dp))
    fwd, bwd, ends, comm, ring = _micro_batch(model, system, shape, plan.stage_layers(model), plan.recompute,
                                              plan.pp == 1, layers_only)  # fmt: skip
    busy = fwd.time_s + bwd.time_s + ends.time_s
    compute = system.capped(busy, fwd.energy_j + bwd.energy_j + ends.energy_j)
    p2p = _pipeline_sends(model, system, plan, shape, dp, compute)
    per_mb = compute + comm.time_s + ring + p2p
    bubble = plan.bubble(per_mb)
    dp_s, zero3_gather, optimizer_s = _data_parallel(
        system, plan.zero, plan.zero_shard, plan.tp, plan.numerics.stored, groups
    )
    exposed_dp = exposed_gradient_sync(plan, dp_s, bwd.time_s * (compute / busy if busy else 1.0))
    # ZeRO-3 gathers the weights for every forward and backward (and recomputed forward) of each
    # micro-batch, behind the compute it prefetches for.
    passes = 3 if plan.recompute == "full" else 2
    zero3 = n_mb * max(0.0, passes * zero3_gather - compute) if zero3_gather else 0.0
    step_time = n_mb * per_mb + bubble + exposed_dp + zero3 + optimizer_s

    tokens = global_batch * seq_len
    per_token = model_flops_per_token(model, seq_len)
    if layers_only:
        per_token -= 6.0 * model.vocab_size * model.hidden_size
    model_flops = per_token * tokens
    peak = system.chip.peak_flops(plan.precision) * system.chips
    hardware = (
        (fwd.flops + bwd.flops + ends.flops) * n_mb * plan.pp * plan.cp * plan.tp * dp
    )  # every chip runs its share
    return TrainingResult(
        step_time_s=step_time, tokens_per_s=tokens / step_time, mfu=model_flops / step_time / peak,
        hfu=hardware / step_time / peak, model_flops=model_flops,
        breakdown_s={"compute": n_mb * compute, "exposed_communication": n_mb * (comm.time_s + ring + p2p)
                     + exposed_dp + zero3, "pipeline_bubble": bubble, "optimizer": optimizer_s},
        memory=mem, plan=plan, dp=dp, micro_batches=n_mb, moe_dropped=_dropped(model, plan, shape),
    )  # fmt: skip


def _dropped(model: LLMConfig, plan: TrainingPlan, shape: _Shape) -> float:
    """Share of the routed copies a capacity factor drops: each expert takes the tokens of one
    micro-batch from every rank of its expert-parallel group."""
    if not model.experts or plan.capacity_factor is None:
        return 0.0
    tokens = shape.tokens * plan.ep
    routing = Routing(experts=model.experts, top_k=model.num_experts_per_tok or 1, tokens=tokens,
                      skew=plan.router_skew, capacity_factor=plan.capacity_factor)  # fmt: skip
    return routing.dropped(tokens)


def _pipeline_sends(model: LLMConfig, system: System, plan: TrainingPlan, shape: _Shape, dp: int, compute: float) -> float:  # fmt: skip
    """Point-to-point transfers of one micro-batch between stages: each tensor-parallel rank sends
    its 1/tp of the activation over its own link (sequence parallelism, or Megatron's
    scatter-gather of the replicated activation)."""
    if plan.pp == 1:
        return 0.0
    act = shape.tokens * model.hidden_size * BYTES_PER_ELEMENT[plan.numerics.stream] / plan.tp
    hop = communicator(system, 2, stride=plan.tp * plan.cp * dp)
    send = op_cost(SendRecv(ranks=2, bytes_per_rank=act, name="pp"), hop).time_s
    if plan.vpp > 1:  # the interleaved schedule overlaps each send with the next chunk's work
        send = max(0.0, send - compute / (2 * plan.vpp))
    return 2 * plan.vpp * send


@lru_cache(maxsize=8192)
def _data_parallel(system: System, zero: int, zero_shard: int | None, tp: int, stored: Precision, groups: tuple[Holders, Holders]) -> tuple[float, float, float]:  # fmt: skip
    """(gradient reduction and ZeRO 1-2 gathers, ZeRO-3's gather of the stage's weights, the
    optimizer step) in seconds, for a plan with these ZeRO fields and tensor parallelism."""
    sync = zero3 = optimizer = 0.0
    plan = TrainingPlan(tp=tp, zero=zero, zero_shard=zero_shard)
    for g in groups:
        shard_ranks = plan.zero_group(g.ranks, g.stride)
        optimizer += (
            graph_cost(autodiff.adam(g.params / shard_ranks, stored), system).time_s if g.params else 0.0
        )
        for s in gradient_sync(plan, g, system, BYTES_PER_ELEMENT[stored]):
            t = op_cost(s.op, s.system).time_s
            if s.zero3_gather:
                zero3 += t
            else:
                sync += t
    return sync, zero3, optimizer
