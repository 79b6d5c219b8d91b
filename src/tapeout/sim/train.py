"""One training step of a transformer: time, memory per chip, MFU, and what the time went to.

Every op of a layer is costed by the rules of `tapeout.perf` on one chip, for one micro-batch
of `micro_batch x seq_len / cp` tokens:
- forward: the projections and MLP (or the experts a rank holds, as a grouped GEMM, with the
  token permutation around them), fused causal attention over the whole sequence (ring
  attention shares it `cp` ways; or unfused, the score matrix through memory), norms and
  pointwise ops, the tensor-parallel all-reduces
  (reduce-scatter plus all-gather with sequence parallelism: the same bytes; with `tp_overlap`
  all but one chunk hidden under the matmuls), the expert all-to-alls (with `ep_overlap` under
  another micro-batch's compute);
- backward: each matmul twice, as its input-gradient and its weight-gradient products; the
  FlashAttention-2 backward; the same communication again;
- recompute: `full` runs each layer's forward again before its backward, `selective` the core
  attention only (Korthikanti et al. 2022);
- context parallelism passes key/value blocks around the ring while attention computes; only
  the part the attention does not hide is exposed.
Pipeline: `m` micro-batches through `pp` stages of `vpp` interleaved chunks take
`(m + (pp - 1) / vpp) x (forward + backward of one micro-batch on one stage)` (1F1B; Narayanan et
al. 2021), plus a point-to-point transfer per micro-batch and chunk boundary (hidden under the
next chunk when interleaved). The last stage also runs the output head.
Communicators see the ranks where Megatron puts them (tp innermost, then cp, dp, pp): a
data-parallel group spans domains `tp` chips apart, pipeline neighbours `tp x cp x dp` apart.
Data parallelism: the gradient reduce-scatter (all-reduce without ZeRO) of each model chunk
overlaps the backward after that chunk's last micro-batch, as Megatron's overlapped gradient
reduction does, dense weights over their dp x cp copies and routed experts over their
dp x cp / ep copies (Megatron-Core's expert-data-parallel group); ZeRO-1/2 all-gather
the updated weights after the step; ZeRO-3 all-gathers each stage's weights for every forward
and backward, hidden behind the compute it prefetches for. With `zero_shard` (hybrid sharding)
the reduce-scatter and the gathers run inside each shard group and an all-reduce of one
shard's gradients joins the groups' replicas. The optimizer (Adam with fp32 master
weights) streams its states once after a pass over the gradients for their global norm. A
sustained load runs at the clock its TDP allows, as in serving (`tapeout.sim.llm`).

Model FLOPs: 6 x active parameters x tokens (embeddings excluded, output head included) plus
attention, 6 x 2 x layers x seq_len x (query width) per token for causal attention (half of the
dense 12 x ... count); hardware FLOPs add what recomputation runs again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import BYTES_PER_ELEMENT, Precision
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.cost import ZERO, Cost
from tapeout.perf.power import energy_per_flop, power_capped
from tapeout.perf.rules import graph_cost, op_cost
from tapeout.perf.system import System
from tapeout.sim.llm import RUNTIME_RESERVE_BYTES
from tapeout.units import GB
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.ops import (
    AllGather,
    AllReduce,
    AllToAll,
    Attention,
    Elementwise,
    Matmul,
    Op,
    Reduce,
    ReduceScatter,
    SendRecv,
)

WEIGHT_BYTES = 2  # bf16 weights (fp8 and int8 training keep bf16 weights and cast on the fly)
GRAD_BYTES = 4  # fp32 gradient accumulation (Megatron's main_grad)
OPTIMIZER_BYTES = 12  # fp32 master weights and Adam's two moments
# Adam reads master weight, both moments and the gradient, and writes the three states and the
# bf16 weight: 4 x 4 + 3 x 4 + 2 bytes per parameter; before it, clipping the gradients' global
# norm (GPT-3 clips at 1.0, Brown et al. 2020, appendix B; Megatron's clip_grad_norm_fp32)
# reads every gradient once more: 4 bytes.
OPTIMIZER_TRAFFIC_BYTES = 34


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingResult:
    step_time_s: float
    tokens_per_s: float
    mfu: float
    hfu: float
    model_flops: float
    breakdown_s: dict[str, float]
    memory_gb: dict[str, float]
    plan: TrainingPlan
    dp: int
    micro_batches: int

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "step_time_s": self.step_time_s, "tokens_per_s": self.tokens_per_s, "mfu": self.mfu,
            "hfu": self.hfu, "model_flops_per_step": self.model_flops, "breakdown_s": self.breakdown_s,
            "memory_per_chip_gb": self.memory_gb,
            "plan": {"tp": p.tp, "pp": p.pp, "dp": self.dp, "cp": p.cp, "ep": p.ep, "vpp": p.vpp,
                     "micro_batch": p.micro_batch, "sequence_parallel": p.sequence_parallel, "tp_overlap": p.tp_overlap,
                     "ep_overlap": p.ep_overlap,
                     "attention": p.attention,
                     "recompute": p.recompute, "zero": p.zero, "zero_shard": p.zero_shard,
                     "micro_batches": self.micro_batches},
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Layer:
    forward: Cost  # compute and memory of one layer's forward, one micro-batch
    backward: Cost
    attention: Cost  # the core attention forward (what selective recompute repeats)
    attention_backward: Cost
    comm_forward: Cost  # tensor- and expert-parallel communication
    comm_backward: Cost
    ring_s: float  # context-parallel key/value passing of the forward (the backward sends twice)


@lru_cache(maxsize=1024)
def model_flops_per_token(model: LLMConfig, seq_len: int) -> float:
    """6 x active non-embedding parameters plus causal attention, per token of a step.

    >>> from tapeout.workloads.models import get_model
    >>> f = model_flops_per_token(get_model("llama-2-7b").config, 4096)
    >>> round(f / 1e9, 1)
    42.9
    """
    params = model.active_param_count() - model.embedding_params()
    if model.tied:
        params += model.vocab_size * model.hidden_size  # the head reuses the embedding matrix
    width = model.num_attention_heads * _qk_dim(model) + model.num_attention_heads * _v_dim(model)
    attention = 6 * model.num_hidden_layers * seq_len * width / 2  # causal: half the pairs
    return 6.0 * params + attention


def _qk_dim(m: LLMConfig) -> int:
    if m.is_mla:
        assert m.qk_nope_head_dim and m.qk_rope_head_dim
        return m.qk_nope_head_dim + m.qk_rope_head_dim
    return m.dim_per_head


def _v_dim(m: LLMConfig) -> int:
    return m.v_head_dim or m.dim_per_head if m.is_mla else m.dim_per_head


@dataclass(frozen=True, slots=True)
class _Shape:
    """What one layer's cost depends on: the plan's splits of a micro-batch."""

    tp: int
    cp: int
    ep: int
    micro_batch: int
    sequence_parallel: bool
    tp_overlap: bool
    ep_overlap: bool
    attention: str
    precision: Precision
    seq_len: int

    @classmethod
    def of(cls, plan: TrainingPlan, seq_len: int) -> _Shape:
        return cls(
            plan.tp, plan.cp, plan.ep, plan.micro_batch, plan.sequence_parallel, plan.tp_overlap, plan.ep_overlap,
            plan.attention, plan.precision, seq_len,
        )  # fmt: skip


@lru_cache(maxsize=8192)
def _layer_cost(model: LLMConfig, system: System, shape: _Shape, moe: bool) -> _Layer:
    return _Step(model, system, shape).layer(moe)


def _head_precision(precision: Precision) -> Precision:
    """The output layer's matmul precision: 16-bit under 8-bit training, whose recipes cover
    the transformer layers' linear modules (Transformer Engine's fp8 layers; AQT's dense
    layers), not Megatron's output layer nor logits taken from the embedding (Megatron-Bridge,
    docs/training/moe-optimization.md: "embeddings, output layer, gradients, optimizer stay in
    original precision")."""
    return "bf16" if BYTES_PER_ELEMENT[precision] < 2 else precision


@lru_cache(maxsize=8192)
def _head_cost(model: LLMConfig, system: System, shape: _Shape) -> Cost:
    step = _Step(model, system, dataclasses.replace(shape, precision=_head_precision(shape.precision)))
    return graph_cost(step._mm(step.tokens, model.vocab_size // shape.tp, model.hidden_size), system)


class _Step:
    def __init__(self, model: LLMConfig, system: System, shape: _Shape) -> None:
        self.m, self.sys, self.p, self.s = model, system, shape, shape.seq_len
        self.prec: Precision = shape.precision
        self.tokens = shape.micro_batch * shape.seq_len // shape.cp  # tokens of one micro-batch on one rank

    def _mm(self, m: int, n: int, k: int, groups: int = 1) -> tuple[Matmul, Matmul, Matmul]:
        """A forward product and its two backward products (input and weight gradients)."""
        fwd = Matmul(m=m, n=n, k=k, groups=groups, precision=self.prec)
        dgrad = Matmul(m=m, n=k, k=n, groups=groups, precision=self.prec)
        wgrad = Matmul(m=k, n=n, k=m, groups=groups, precision=self.prec)
        return fwd, dgrad, wgrad

    def layer(self, moe: bool) -> _Layer:
        c, p, t = self.m, self.p, self.tokens
        h, tp = c.hidden_size, p.tp
        heads, kv = c.num_attention_heads // tp, -(-c.kv_heads // tp)
        d, dv = _qk_dim(c), _v_dim(c)
        fwd: list[Op] = []
        bwd: list[Op] = []

        def mm(m: int, n: int, k: int, groups: int = 1) -> None:
            f, dg, wg = self._mm(m, n, k, groups)
            fwd.append(f)
            bwd.extend((dg, wg))

        if c.is_mla:
            # Multi-head latent attention trains unabsorbed: low-rank query and key/value
            # projections, expanded to every head (DeepSeek-V3, section 2.1.1).
            assert c.kv_lora_rank and c.qk_rope_head_dim and c.qk_nope_head_dim
            kv = heads
            if c.q_lora_rank:
                mm(t, c.q_lora_rank, h)
                mm(t, heads * d, c.q_lora_rank)
            else:
                mm(t, heads * d, h)
            mm(t, c.kv_lora_rank + c.qk_rope_head_dim, h)
            mm(t, heads * (c.qk_nope_head_dim + dv), c.kv_lora_rank)
        else:
            mm(t, (heads + 2 * kv) * d, h)
        mm(t, h, heads * dv)
        ffn_rows = t
        if moe:
            e, k = c.experts, c.num_experts_per_tok or 1
            ffn = c.moe_intermediate_size or c.ffn_size
            mm(t, e, h)  # router
            local = e // p.ep
            # Balanced routing: the ep ranks of a group exchange tokens so each expert gets its share.
            per_expert = max(1, -(-t * k * p.ep // e))
            ffn_rows = per_expert * local
            mm(per_expert, (2 if c.gated_mlp else 1) * ffn // tp, h, groups=local)
            mm(per_expert, h, ffn // tp, groups=local)
            if c.n_shared_experts:
                mm(t, (2 if c.gated_mlp else 1) * c.n_shared_experts * ffn // tp, h)
                mm(t, h, c.n_shared_experts * ffn // tp)
            ffn_width = ffn // tp
        else:
            mm(t, (2 if c.gated_mlp else 1) * c.ffn_size // tp, h)
            mm(t, h, c.ffn_size // tp)
            ffn_width = c.ffn_size // tp
        # Norms, residuals, activation and dropout: on 1/tp of the tokens with sequence parallelism.
        rows = t // tp if p.sequence_parallel else t
        stream: list[Op] = [
            Reduce(rows=rows, cols=h),
            Reduce(rows=rows, cols=h),
            Elementwise(elements=rows * h, reads=2, writes=1),
            Elementwise(elements=rows * h, reads=2, writes=1),
            Elementwise(elements=ffn_rows * ffn_width, reads=2 if c.gated_mlp else 1, writes=1),
        ]
        if moe:
            # Token permutation (Megatron-Core's dispatcher): each of a token's k copies is
            # gathered into its expert's order before the experts, and scattered back and
            # weighed into the token after them; across an expert-parallel group each side
            # sorts once more, by source rank and by local expert.
            copies = t * (c.num_experts_per_tok or 1) * h
            moves = 2 if p.ep > 1 else 1
            stream += [Elementwise(elements=copies, reads=1, writes=1)] * (2 * moves)
        fwd += stream
        bwd += stream + stream  # gradients read the saved input and the incoming gradient
        attn = Attention(batch=p.micro_batch, q_len=self.s, kv_len=self.s, heads=heads, kv_heads=kv,
                         head_dim=d, head_dim_v=dv, causal=True, precision="bf16")  # fmt: skip
        attn_b = Attention(batch=p.micro_batch, q_len=self.s, kv_len=self.s, heads=heads, kv_heads=kv,
                           head_dim=d, head_dim_v=dv, causal=True, backward=True, precision="bf16")  # fmt: skip
        sys = self.sys
        if p.attention == "unfused":
            attention = graph_cost(_unfused_attention(p.micro_batch * heads, self.s, d, dv), sys)
            attention_b = graph_cost(
                _unfused_attention(p.micro_batch * heads, self.s, d, dv, backward=True), sys
            )
        else:
            attention = op_cost(attn, sys) * (1 / p.cp)
            attention_b = op_cost(attn_b, sys) * (1 / p.cp)
        tp_comm: list[Op] = []
        if tp > 1:
            size = t * h * 2
            if p.sequence_parallel:
                tp_comm += [
                    AllGather(ranks=tp, bytes_per_rank=size),
                    ReduceScatter(ranks=tp, bytes_per_rank=size),
                ] * 2
            else:
                tp_comm += [AllReduce(ranks=tp, bytes_per_rank=size)] * 2
        domain = self._domain(tp * max(1, p.ep if moe else 1))
        comm_cost = graph_cost(tp_comm, domain) if tp_comm else ZERO
        forward = graph_cost(fwd, sys)
        backward = graph_cost(bwd, sys)
        if p.tp_overlap:
            # Split in `tp` chunks, each exchanged under the matmul of the one before: the first
            # chunk, and whatever the matmuls are too short to cover, stay exposed.
            hidden = min(comm_cost.time_s * (1 - 1 / tp), forward.time_s)
            comm_cost = _shortened(comm_cost, comm_cost.time_s - hidden)
        if moe and p.ep > 1:
            k = c.num_experts_per_tok or 1
            a2a = graph_cost([AllToAll(ranks=p.ep, bytes_per_rank=t * k * h * 2)] * 2, domain)
            if p.ep_overlap:
                # Two micro-batches interleaved: the dispatch and combine of one run under the
                # other's forward and backward; half of that compute covers each direction.
                hidden = min(a2a.time_s, (forward.time_s + backward.time_s) / 2)
                a2a = _shortened(a2a, a2a.time_s - hidden)
            comm_cost = comm_cost + a2a
        ring = 0.0
        if p.cp > 1:
            block = t * kv * (d + dv) * 2  # this rank's keys and values, bf16
            # A ring that leaves the scale-up domain runs at the pace of its network hops.
            hop = self.sys
            if tp * p.cp > self.sys.scale_up_domain:
                hop = System.of(self.sys.chip, 2, chips_per_node=1, calibration=self.sys.cal,
                                scale_out_gbit_s_per_chip=self.sys.nic_bandwidth * 8 / 1e9)  # fmt: skip
            ring = (p.cp - 1) * op_cost(SendRecv(ranks=2, bytes_per_rank=block), hop).time_s
        return _Layer(
            forward=forward, backward=backward, attention=attention,
            attention_backward=attention_b, comm_forward=comm_cost, comm_backward=comm_cost, ring_s=ring,
        )  # fmt: skip

    def _domain(self, ranks: int) -> System:
        return (
            self.sys if ranks <= self.sys.chips else System.of(self.sys.chip, ranks, calibration=self.sys.cal)
        )


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
    ...                TrainingPlan(tp=1, recompute="selective", zero=1), seq_len=4096, global_batch=64)
    >>> 0.2 < r.mfu < 0.7
    True
    """
    if seq_len < 1 or global_batch < 1:
        raise TapeoutError(
            f"fields 'seq_len' and 'global_batch': must be >= 1, got {seq_len} and {global_batch}"
        )
    dp, n_mb = plan.resolve(model, system.chips, seq_len, global_batch)
    c, p = model, plan
    memory = _memory(model, system, plan, dp, seq_len, layers_only)
    if check_memory:
        used = sum(memory.values())
        cap = system.chip.memory.capacity_gb
        if used > cap:
            parts = ", ".join(f"{k} {v:.1f} GB" for k, v in memory.items())
            raise TapeoutError(
                f"the plan does not fit on {system.chip.id}: per chip {parts} = {used:.1f} GB exceed "
                f"{cap:g} GB by {used - cap:.1f} GB (tp {p.tp}, pp {p.pp}, dp {dp}, cp {p.cp}, "
                f"micro_batch {p.micro_batch}, recompute {p.recompute}, zero {p.zero})"
            )
    shape = _Shape.of(plan, seq_len)
    c, p = model, plan
    kinds = _layer_census(c)[0]
    per_stage = float(math.ceil(c.num_hidden_layers / (p.pp * p.vpp)) * p.vpp)  # the busiest stage
    fwd = bwd = comm = ZERO
    ring = 0.0
    for moe, count in kinds.items():
        lay = _layer_cost(model, system, shape, moe)
        share = per_stage * count / c.num_hidden_layers
        extra = {"none": ZERO, "selective": lay.attention, "full": lay.forward + lay.attention}[p.recompute]
        fwd = fwd + (lay.forward + lay.attention) * share
        bwd = bwd + (lay.backward + lay.attention_backward + extra) * share
        recompute_comm = lay.comm_forward if p.recompute == "full" else ZERO
        comm = comm + (lay.comm_forward + lay.comm_backward + recompute_comm) * share
        # Ring passes hide behind attention; the backward sends keys, values and their gradients.
        att = (lay.attention.time_s, lay.attention_backward.time_s)
        ring += share * (max(0.0, lay.ring_s - att[0]) + max(0.0, 2 * lay.ring_s - att[1]))
    h = c.hidden_size
    t = plan.micro_batch * seq_len // plan.cp
    head = ZERO if layers_only else _head_cost(model, system, shape)
    busy = fwd.time_s + bwd.time_s + head.time_s
    flops = fwd.flops + bwd.flops + head.flops
    cal = system.cal
    joules = (
        (fwd.flops + bwd.flops) * energy_per_flop(system, p.precision, cal.training_pj_per_flop)
        + head.flops * energy_per_flop(system, _head_precision(p.precision), cal.training_pj_per_flop)
        + (fwd.dram_bytes + bwd.dram_bytes + head.dram_bytes) * cal.dram_pj_per_byte * 1e-12
    )
    compute = power_capped(system, busy, joules)
    p2p = 0.0
    if p.pp > 1:
        # Each tensor-parallel rank sends its 1/tp of the activation over its own link (sequence
        # parallelism, or Megatron's scatter-gather of the replicated activation).
        act = t * h * 2 / p.tp
        hop = _group(system, 2, stride=p.tp * p.cp * dp)
        send = op_cost(SendRecv(ranks=2, bytes_per_rank=act), hop).time_s
        if p.vpp > 1:  # the interleaved schedule overlaps each send with the next chunk's work
            send = max(0.0, send - compute / (2 * p.vpp))
        p2p = 2 * p.vpp * send
    per_mb = compute + comm.time_s + ring + p2p
    bubble = (p.pp - 1) / p.vpp * per_mb
    pipeline = n_mb * per_mb + bubble

    # Parameters held per chip (one stage, tp-split; experts spread over ep), each part with the
    # ranks that hold it too: dense weights dp x cp ranks `tp` apart, an expert's dp x cp / ep
    # ranks `tp x ep` apart.
    dp_s = zero3_gather = optimizer_s = 0.0
    memory_rate = system.chip.memory_bandwidth * system.cal.memory
    holders = (dp * p.cp, dp * p.cp // p.ep)
    strides = (p.tp, p.tp * p.ep)
    for params, ranks, stride in zip(_stage_params(c, p, layers_only), holders, strides, strict=True):
        shard = _shard(p, ranks, stride)
        optimizer_s += params / shard * OPTIMIZER_TRAFFIC_BYTES / memory_rate
        if ranks == 1 or params == 0:
            continue
        grads = params * 2  # reduced in bf16
        if shard == 1:
            dp_s += op_cost(
                AllReduce(ranks=ranks, bytes_per_rank=grads), _group(system, ranks, stride=stride)
            ).time_s
            continue
        group = _group(system, shard, stride=stride)
        dp_s += op_cost(ReduceScatter(ranks=shard, bytes_per_rank=grads), group).time_s
        if shard < ranks:  # hybrid: the shard groups sum their shards, each with its replicas
            across = _group(system, ranks // shard, stride=stride * shard)
            dp_s += op_cost(AllReduce(ranks=ranks // shard, bytes_per_rank=grads / shard), across).time_s
        gather = op_cost(AllGather(ranks=shard, bytes_per_rank=params * WEIGHT_BYTES), group).time_s
        if p.zero < 3:
            dp_s += gather
        else:
            zero3_gather += gather
    exposed_dp = _exposed_gradient_sync(dp_s, bwd.time_s * (compute / busy if busy else 1.0), p)
    # ZeRO-3 gathers the weights for every forward and backward (and recomputed forward) of each
    # micro-batch, behind the compute it prefetches for.
    passes = 3 if p.recompute == "full" else 2
    zero3 = n_mb * max(0.0, passes * zero3_gather - compute) if zero3_gather else 0.0
    step_time = pipeline + exposed_dp + zero3 + optimizer_s

    tokens = global_batch * seq_len
    model_flops = model_flops_per_token(c, seq_len) * tokens
    if layers_only:
        model_flops = (model_flops_per_token(c, seq_len) - 6.0 * c.head_params()) * tokens
    peak = system.chip.peak_flops(p.precision) * system.chips
    hardware = flops * n_mb * p.pp * p.cp * p.tp * dp  # every chip runs its share
    return TrainingResult(
        step_time_s=step_time, tokens_per_s=tokens / step_time, mfu=model_flops / step_time / peak,
        hfu=hardware / step_time / peak, model_flops=model_flops,
        breakdown_s={"compute": n_mb * compute, "exposed_communication": n_mb * (comm.time_s + ring + p2p)
                     + exposed_dp + zero3, "pipeline_bubble": bubble, "optimizer": optimizer_s},
        memory_gb=memory, plan=plan, dp=dp, micro_batches=n_mb,
    )  # fmt: skip


def _unfused_attention(bh: int, s: int, d: int, dv: int, backward: bool = False) -> list[Op]:
    """Attention with the score matrix in memory, for `bh` sequence-heads of `s` tokens: the
    query-key product, a fused scale-mask-softmax over the scores (all of them: the causal mask
    saves no work here), and the product with the values. The backward runs the four gradient
    products and the softmax's gradient, which reads the probabilities and their gradient."""
    scores = float(bh) * s * s
    if not backward:
        return [
            Matmul(m=s, n=s, k=d, groups=bh),
            Elementwise(elements=scores, reads=1, writes=1, flops_per_element=5),
            Matmul(m=s, n=dv, k=s, groups=bh),
        ]
    return [
        Matmul(m=s, n=s, k=dv, groups=bh),  # probabilities' gradient: dO V^T
        Matmul(m=s, n=dv, k=s, groups=bh),  # values' gradient: P^T dO
        Elementwise(elements=scores, reads=2, writes=1, flops_per_element=3),
        Matmul(m=s, n=d, k=s, groups=bh),  # queries' gradient
        Matmul(m=s, n=d, k=s, groups=bh),  # keys' gradient
    ]


def _shortened(cost: Cost, time_s: float) -> Cost:
    """`cost` with the same traffic, of which only `time_s` is waited for."""
    f = time_s / cost.time_s if cost.time_s else 0.0
    return dataclasses.replace(
        cost, time_s=time_s, compute_s=cost.compute_s * f, memory_s=cost.memory_s * f,
        network_s=cost.network_s * f, latency_s=cost.latency_s * f,
    )  # fmt: skip


def _exposed_gradient_sync(sync_s: float, backward_s: float, p: TrainingPlan) -> float:
    """The part of the data-parallel gradient reduction the backward does not hide.

    Each model chunk's gradients are reduced as soon as its last micro-batch's backward is done
    (Megatron's overlapped gradient reduction). The first stage finishes its `vpp` chunks in
    the pipeline's drain, `pp` chunk-backwards apart, the last of them as the step's final
    work: the last chunk's reduction hides behind its own backward only, the others behind the
    gap to the next chunk. With one chunk this is the reduction less one micro-batch's backward.
    """
    chunk_sync, chunk_backward = sync_s / p.vpp, backward_s / p.vpp
    gap = p.pp * chunk_backward
    return max(0.0, chunk_sync - chunk_backward) + (p.vpp - 1) * max(0.0, chunk_sync - gap)


def _group(system: System, ranks: int, *, stride: int) -> System:
    """The system as one communicator sees it: `ranks` chips placed `stride` apart.

    Megatron orders ranks tp, cp, dp, pp from the innermost, so a data-parallel group's
    members sit `tp` chips apart and pipeline neighbours `tp x cp x dp` apart. A scale-up domain
    then holds `domain / stride` members of the group (at least one), and the group's
    hierarchical collectives send `size / members` per chip over the network, each chip over
    its own NIC (rail-optimized fabric), while the other groups of the domain do the same.
    """
    domain = system.scale_up_domain
    members = domain // stride if domain % stride == 0 else 1  # a stride that does not tile it: the network
    chips = max(ranks, 2)
    return dataclasses.replace(system, chips=chips, scale_up_domain=max(1, min(members, chips)))


@lru_cache(maxsize=256)
def _activation_units(c: LLMConfig, eight_bit: bool) -> tuple[float, float, float]:
    """Bytes one token keeps per layer for its backward, in units of `hidden_size`, averaged over
    the layers: (held whole by every tensor-parallel rank unless sequence parallelism splits it,
    split over them, held whole even with sequence parallelism).

    Korthikanti et al. 2022 (section 4.1) count 34 for a GPT layer: 10 replicated (two norm
    inputs, the attention and MLP inputs, two dropout masks) and 24 split (query, key, value,
    the projection's input, the MLP's 4h-wide GELU input and output). The same items are taken
    from the model here: keys and values at the width of the key/value heads, a gated MLP keeps
    both its up-projections, and an MoE layer keeps, for each of a token's `k` experts, the
    token's routed copy, the expert's MLP items and the expert's output (weighed by the router
    in the combine). Fused attention keeps no score matrix. With 8-bit matmuls the inputs of
    the products are kept as their 8-bit casts (Transformer Engine, AQT). The routed copies and
    the experts' outputs stay whole on every tensor-parallel rank: the dispatcher gathers each
    expert's tokens to all the ranks that hold a slice of it, and its output, summed over them,
    is scattered back only after the combine.
    """
    h = c.hidden_size
    cast = 1 if eight_bit else 2  # bytes of a matmul input kept for its weight gradient
    heads = c.num_attention_heads
    kv = heads if c.is_mla else c.kv_heads
    d, dv = _qk_dim(c), _v_dim(c)
    # Norm inputs, the attention input's cast, the two dropout masks.
    attn_replicated = 4 + cast + 2
    attn_split = (2 * heads * d + 2 * kv * (d + dv) + cast * heads * dv) / h
    g = 2 if c.gated_mlp else 1
    kinds = _layer_census(c)[0]
    replicated = split = routed = 0.0
    for moe, count in kinds.items():
        share = count / c.num_hidden_layers
        if moe:
            k = c.num_experts_per_tok or 1
            f = c.moe_intermediate_size or c.ffn_size
            expert = (2 * g * f + cast * f) / h
            mlp_replicated = 2.0  # the router's input
            mlp_split = k * expert + c.n_shared_experts * expert
            routed += share * k * (cast + 2)  # per routed expert, the copy and the output
        else:
            mlp_replicated = cast
            mlp_split = (2 * g * c.ffn_size + cast * c.ffn_size) / h
        replicated += share * (attn_replicated + mlp_replicated)
        split += share * (attn_split + mlp_split)
    return replicated, split, routed


@lru_cache(maxsize=256)
def _layer_census(c: LLMConfig) -> tuple[dict[bool, int], float, float]:
    """Layers with and without experts; all layers' parameters outside and inside routed experts."""
    kinds: dict[bool, int] = {}
    shared = routed = 0.0
    for i in range(c.num_hidden_layers):
        moe = c.is_moe_layer(i)
        kinds[moe] = kinds.get(moe, 0) + 1
        layer, _ = c.layer_params(i)
        experts = c.experts * c.mlp_params(c.moe_intermediate_size or c.ffn_size) if moe else 0
        shared += layer - experts
        routed += experts
    return kinds, shared, routed


def _stage_params(c: LLMConfig, p: TrainingPlan, layers_only: bool) -> tuple[float, float]:
    """Parameters the busiest stage holds per chip: (replicated over the dp x cp ranks, routed
    experts, replicated over dp x cp / ep: Megatron-Core's expert-data-parallel group)."""
    _, shared, routed = _layer_census(c)
    stage = math.ceil(c.num_hidden_layers / (p.pp * p.vpp)) * p.vpp / c.num_hidden_layers
    dense = shared / p.tp * stage
    if not layers_only:
        dense += max(c.embedding_params(), c.head_params()) / p.tp
    return dense, routed / (p.tp * p.ep) * stage


def _shard(p: TrainingPlan, ranks: int, stride: int) -> int:
    """Ranks a ZeRO group shards one weight's states over: all `ranks` holders (placed `stride`
    chips apart), or with `zero_shard` those of them inside one group's span of
    `zero_shard x tp` chips; 1 without ZeRO."""
    if p.zero == 0:
        return 1
    if p.zero_shard is None:
        return ranks
    return math.gcd(ranks, max(1, p.zero_shard * p.tp // stride))


def _memory(
    c: LLMConfig, system: System, p: TrainingPlan, dp: int, s: int, layers_only: bool
) -> dict[str, float]:
    """GB per chip of the first stage (it keeps the most micro-batches in flight)."""
    weights = grads = optimizer = 0.0
    holders = ((dp * p.cp, p.tp), (dp * p.cp // p.ep, p.tp * p.ep))
    for params, (ranks, stride) in zip(_stage_params(c, p, layers_only), holders, strict=True):
        shard = _shard(p, ranks, stride)
        weights += params * WEIGHT_BYTES / (shard if p.zero >= 3 else 1)
        grads += params * GRAD_BYTES / (shard if p.zero >= 2 else 1)
        optimizer += params * OPTIMIZER_BYTES / shard
    if p.zero >= 3:  # the layer being computed and the one prefetched, gathered whole
        _, shared, routed = _layer_census(c)
        weights += 2 * (shared / p.tp + routed / (p.tp * p.ep)) / c.num_hidden_layers * WEIGHT_BYTES
    # Activations of one layer and micro-batch: s b h x (replicated + split / tp + routed) bytes,
    # the replicated part over tp too with sequence parallelism (see `_activation_units`).
    b, h = p.micro_batch, c.hidden_size
    sl = s / p.cp
    replicated, split, routed = _activation_units(c, BYTES_PER_ELEMENT[p.precision] < 2)
    if p.recompute == "full":
        per_layer = 2 * sl * b * h / (p.tp if p.sequence_parallel else 1)
    else:
        whole = routed + (0.0 if p.sequence_parallel else replicated)
        per_layer = sl * b * h * (whole + (split + (replicated if p.sequence_parallel else 0.0)) / p.tp)
        if p.attention == "unfused" and p.recompute == "none":
            # The scores and the softmax's output, with its dropout mask: 5 a s^2 b bytes, tp-split.
            per_layer += 5 * c.num_attention_heads * sl * sl * b / p.tp
    layers = math.ceil(c.num_hidden_layers / (p.pp * p.vpp)) * p.vpp
    in_flight = float(p.pp)
    if p.vpp > 1:
        in_flight = p.pp * (1 + (p.pp - 1) / (p.pp * p.vpp))
    activations = per_layer * layers * in_flight
    return {
        "weights": weights / GB, "gradients": grads / GB, "optimizer": optimizer / GB,
        "activations": activations / GB, "runtime": RUNTIME_RESERVE_BYTES / GB,
    }  # fmt: skip
