"""One LLM replica on its chips: the latency of one serving iteration and memory per chip.

An iteration (one forward pass of a continuous-batching engine) carries any mix of prefill
chunks and decode tokens. Its cost is the sum of the op costs of every layer on one chip of
the busiest pipeline stage, from the cost rules of `tapeout.perf`:
- the token-parallel ops (projections, MLP or experts, norms, tensor-parallel all-reduces,
  expert all-to-all) see all the tokens of the iteration, so they are costed once per token
  count and cached;
- attention is costed per iteration: one fused call for the prefill chunks and one for the
  decode sequences, at their mean context (decode attention streams the KV cache, so its
  time is linear in the total context);
- the output head runs only for the sequences that sample a token.
With `pp` stages the sequences are cut into `pp` micro-batches that fill the pipeline, so an
iteration takes `pp` stage times and every sequence advances by one token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import BYTES_PER_ELEMENT, Precision
from tapeout.parallel.inference import InferencePlan
from tapeout.perf.cost import ZERO, Cost
from tapeout.perf.power import energy_per_flop, power_capped
from tapeout.perf.rules import graph_cost, op_cost
from tapeout.perf.system import System
from tapeout.units import GB
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.ops import (
    AllReduce,
    AllToAll,
    Attention,
    Elementwise,
    Matmul,
    Op,
    Reduce,
    SendRecv,
)

# Memory a serving runtime keeps for itself on every chip: the CUDA/driver context, library
# workspaces (cuBLAS, attention), communication buffers. An assumption of the order vLLM and
# TensorRT-LLM report at start-up (0.5 to 1.5 GB); not fitted.
RUNTIME_RESERVE_BYTES = 1.0 * GB
# Share of the memory left after weights, activations and the reserve that the KV cache
# takes: TensorRT-LLM's default kv_cache_free_gpu_mem_fraction and vLLM's default
# gpu_memory_utilization are both 0.9.
KV_MEMORY_FRACTION = 0.9
KV_BLOCK_TOKENS = 16  # tokens per page of the paged KV cache (vLLM's default block size)
ATTENTION_SHAPES = 1 << 16  # attention costs a replica keeps (a few MB), cleared when full


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """What one iteration processes, summed over the whole replica.

    `prefill_context` sums, over the prefill chunks, the keys the last token of each chunk
    attends to (its prompt so far); `decode_context` sums the keys of each decoding sequence
    (its context including the new token). `emitting` counts the sequences that sample a token
    (every decode, and each chunk that ends its prompt); by default all of them.
    """

    prefill_tokens: int = 0
    prefill_seqs: int = 0
    prefill_context: int = 0
    decode_seqs: int = 0
    decode_context: int = 0
    emitting: int | None = None

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @property
    def samplers(self) -> int:
        return self.prefill_seqs + self.decode_seqs if self.emitting is None else self.emitting


@dataclass(frozen=True, slots=True)
class StepCost:
    """One iteration: its latency and what it spent it on (per chip of the busiest stage)."""

    time_s: float
    parts: Mapping[str, Cost]
    power_capped: bool = False

    @property
    def bound(self) -> str:
        """What limits the iteration: power, or the bound of its costliest part."""
        if self.power_capped:
            return "power"
        name, cost = max(self.parts.items(), key=lambda kv: kv[1].time_s)
        return "network" if name == "communication" else cost.bound


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPlan:
    """Bytes per chip of the busiest stage."""

    chip_id: str
    capacity_bytes: float
    weights_bytes: float
    activation_bytes: float
    reserve_bytes: float
    kv_bytes_per_token: float
    kv_pool_bytes: float
    kv_block_tokens: int

    @property
    def kv_tokens(self) -> int:
        """KV-cache capacity of one chip group, in tokens (whole pages)."""
        if self.kv_bytes_per_token <= 0:
            return 0
        pages = int(self.kv_pool_bytes // (self.kv_bytes_per_token * self.kv_block_tokens))
        return pages * self.kv_block_tokens

    def pages(self, tokens: int) -> int:
        return -(-tokens // self.kv_block_tokens)

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "chip": self.chip_id,
            "capacity_gb": self.capacity_bytes / GB,
            "weights_gb": self.weights_bytes / GB,
            "activations_gb": self.activation_bytes / GB,
            "reserve_gb": self.reserve_bytes / GB,
            "kv_cache_gb": self.kv_pool_bytes / GB,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_tokens": self.kv_tokens,
        }


def _wider(a: Precision, b: Precision) -> Precision:
    return a if BYTES_PER_ELEMENT[a] >= BYTES_PER_ELEMENT[b] else b


@dataclass(eq=False, kw_only=True)
class Replica:
    """One model replica: a model, a system and a plan.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.workloads.models import get_model
    >>> r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("a100-sxm-80gb")))
    >>> step = r.step(Batch(decode_seqs=1, decode_context=200))
    >>> step.bound, 5e-3 < step.time_s < 20e-3
    ('memory', True)
    """

    model: LLMConfig
    system: System
    plan: InferencePlan
    max_tokens: int  # the token budget of one iteration: sizes the activation memory
    layers_only: bool = False  # the transformer layers alone: no embeddings, final norm or head
    memory: MemoryPlan = field(init=False)
    _linear: dict[int, tuple[Cost, Cost]] = field(init=False, default_factory=dict)
    _head: dict[int, Cost] = field(init=False, default_factory=dict)
    _kinds: dict[bool, int] = field(init=False, default_factory=dict)  # layers with experts or not
    _layers_per_stage: int = field(init=False, default=1)
    _parts: int = field(init=False, default=1)  # pipeline stages x attention groups
    # per attention shape (see `_attention_shape`): time, FLOPs and DRAM bytes of one layer
    _attention_costs: dict[tuple[int, int, int, int, int], tuple[float, float, float]] = field(
        init=False, default_factory=dict
    )
    # joules per layer, attention and head FLOP and per DRAM byte
    _energy: tuple[float, float, float, float] = field(init=False, default=(0.0, 0.0, 0.0, 0.0))

    @classmethod
    def of(
        cls,
        model: LLMConfig,
        system: System,
        plan: InferencePlan | None = None,
        *,
        max_tokens: int = 8192,
        kv_memory_fraction: float = KV_MEMORY_FRACTION,
        layers_only: bool = False,
    ) -> Replica:
        plan = plan or InferencePlan()
        plan.replicas(model, system.chips, system.chip.id)
        if max_tokens < 1:
            raise TapeoutError(f"field 'max_tokens': the token budget must be >= 1, got {max_tokens}")
        replica = cls(model=model, system=system, plan=plan, max_tokens=max_tokens, layers_only=layers_only)
        for i in range(model.num_hidden_layers):
            moe = model.is_moe_layer(i)
            replica._kinds[moe] = replica._kinds.get(moe, 0) + 1
        replica._layers_per_stage = math.ceil(model.num_hidden_layers / plan.pp)
        replica._parts = plan.pp * plan.attention_groups
        cal = system.cal
        pj = cal.serving_pj_per_flop
        replica._energy = (
            energy_per_flop(system, plan.compute_precision, pj),
            energy_per_flop(system, replica._attention_precision, pj),
            energy_per_flop(system, plan.stream_precision, pj),
            cal.dram_pj_per_byte * 1e-12,
        )
        replica.memory = replica._memory_plan(kv_memory_fraction)
        return replica

    # ---- shapes --------------------------------------------------------------------------
    @property
    def _stage_layers(self) -> float:
        """Share of the model's layers on the busiest stage."""
        m = self.model
        return math.ceil(m.num_hidden_layers / self.plan.pp) / m.num_hidden_layers

    def _share(self, count: int) -> int:
        """Of `count` things of the replica, those one attention group of one micro-batch sees."""
        return -(-count // self._parts) if count else 0

    # ---- memory --------------------------------------------------------------------------
    def _memory_plan(self, kv_fraction: float) -> MemoryPlan:
        m, p, chip = self.model, self.plan, self.system.chip
        wbytes = BYTES_PER_ELEMENT[p.weight_precision]
        sbytes = BYTES_PER_ELEMENT[p.stream_precision]
        base = (m.attention_params() + m.norm_params()) / p.tp
        layers = 0.0
        for moe, count in self._kinds.items():
            if moe:
                h, ffn_e = m.hidden_size, m.moe_intermediate_size or m.ffn_size
                routed = m.experts * m.mlp_params(ffn_e) / p.stage_chips
                other = (h * m.experts + m.n_shared_experts * m.mlp_params(ffn_e)) / p.tp
                layers += count * (base + routed + other)
            else:
                layers += count * (base + m.mlp_params(m.ffn_size) / p.tp)
        ends = m.embedding_params() + m.head_params()
        if p.pp > 1:
            ends = max(m.embedding_params(), m.head_params())
        if self.layers_only:
            ends = 0
        weights = layers * self._stage_layers * wbytes + ends / p.tp * max(wbytes, sbytes)
        tokens = -(-self.max_tokens // p.attention_groups)
        per_token = 4 * m.hidden_size + (self._heads_chip() + 2 * self._kv_heads_chip()) * m.dim_per_head
        per_token += 2 * max(m.ffn_size, m.moe_intermediate_size or 0) // p.tp
        logits = 0 if self.layers_only else tokens * m.vocab_size / p.tp * 4  # fp32, a full budget
        activations = tokens * per_token * sbytes + logits
        kv_per_token = self._kv_bytes_per_token_layer() * math.ceil(m.num_hidden_layers / p.pp)
        free = chip.memory.capacity_gb * GB - weights - activations - RUNTIME_RESERVE_BYTES
        if free <= 0:
            raise TapeoutError(
                f"the model does not fit on {chip.id}: per chip, weights {weights / GB:.1f} GB + "
                f"activations {activations / GB:.1f} GB + runtime {RUNTIME_RESERVE_BYTES / GB:.1f} GB "
                f"exceed the {chip.memory.capacity_gb:g} GB of memory by {-free / GB:.1f} GB "
                f"(tp {p.tp}, pp {p.pp}, ep {p.ep}, weights in {p.weight_precision})"
            )
        return MemoryPlan(
            chip_id=chip.id,
            capacity_bytes=chip.memory.capacity_gb * GB,
            weights_bytes=weights,
            activation_bytes=activations,
            reserve_bytes=RUNTIME_RESERVE_BYTES,
            kv_bytes_per_token=kv_per_token,
            kv_pool_bytes=free * kv_fraction,
            kv_block_tokens=KV_BLOCK_TOKENS,
        )

    def _heads_chip(self) -> int:
        return self.model.num_attention_heads // self.plan.tp

    def _kv_heads_chip(self) -> int:
        # Key/value heads split across tp; with more chips than kv heads each chip keeps one.
        return -(-self.model.kv_heads // self.plan.tp)

    def _kv_bytes_per_token_layer(self) -> float:
        m = self.model
        kvb = BYTES_PER_ELEMENT[self.plan.kv_precision]
        if m.is_mla:
            assert m.kv_lora_rank and m.qk_rope_head_dim
            return (m.kv_lora_rank + m.qk_rope_head_dim) * kvb  # the latent, on every chip
        return self._kv_heads_chip() * 2 * m.dim_per_head * kvb

    # ---- ops -----------------------------------------------------------------------------
    def _mm(self, m: int, n: int, k: int, name: str, groups: int = 1) -> Matmul:
        p = self.plan
        return Matmul(
            m=m,
            n=n,
            k=k,
            groups=groups,
            precision=p.compute_precision,
            weight_precision=p.weight_precision,
            out_precision=p.stream_precision,
            name=name,
        )

    def _mlp(self, m: int, ffn: int, name: str, groups: int = 1) -> list[Op]:
        gated = self.model.gated_mlp
        h = self.model.hidden_size
        return [
            self._mm(m, (2 if gated else 1) * ffn, h, f"{name}.up", groups),
            Elementwise(
                elements=m * ffn * groups, reads=2 if gated else 1, precision=self.plan.stream_precision
            ),
            self._mm(m, h, ffn, f"{name}.down", groups),
        ]

    def _attention_linear(self, m: int) -> list[Op]:
        c, _p = self.model, self.plan
        h, heads = c.hidden_size, self._heads_chip()
        if c.is_mla:
            assert c.kv_lora_rank and c.qk_nope_head_dim and c.qk_rope_head_dim and c.v_head_dim
            qk = c.qk_nope_head_dim + c.qk_rope_head_dim
            ops: list[Op] = []
            if c.q_lora_rank:
                ops += [self._mm(m, c.q_lora_rank, h, "q_a"), self._mm(m, heads * qk, c.q_lora_rank, "q_b")]
            else:
                ops.append(self._mm(m, heads * qk, h, "q"))
            ops += [
                self._mm(m, c.kv_lora_rank + c.qk_rope_head_dim, h, "kv_a"),
                self._mm(m, h, heads * c.v_head_dim, "o"),
            ]
            return ops
        d = c.dim_per_head
        return [
            self._mm(m, (heads + 2 * self._kv_heads_chip()) * d, h, "qkv"),
            self._mm(m, h, heads * d, "o"),
        ]

    def _comm(self, m: int, moe: bool) -> list[Op]:
        """Communication of one layer for `m` tokens of an attention group."""
        p, h = self.plan, self.model.hidden_size
        sb = BYTES_PER_ELEMENT[p.stream_precision]
        ops: list[Op] = []
        if p.tp > 1:
            ops.append(AllReduce(ranks=p.tp, bytes_per_rank=m * h * sb, name="tp.attention"))
        if moe and p.ep > p.tp:
            k = self.model.num_experts_per_tok or 1
            ab = BYTES_PER_ELEMENT[p.act_precision]
            ops.append(AllToAll(ranks=p.ep, bytes_per_rank=m * k * h * ab, name="ep.dispatch"))
            ops.append(AllToAll(ranks=p.ep, bytes_per_rank=m * k * h * sb, name="ep.combine"))
        elif p.stage_chips > 1:
            ops.append(AllReduce(ranks=p.stage_chips, bytes_per_rank=m * h * sb, name="tp.mlp"))
        return ops

    def _moe(self, m_group: int) -> list[Op]:
        """Router, shared experts and the routed experts one chip runs."""
        c, p = self.model, self.plan
        h, e, k = c.hidden_size, c.experts, c.num_experts_per_tok or 1
        ffn_e = c.moe_intermediate_size or c.ffn_size
        ops: list[Op] = [Matmul(m=m_group, n=e, k=h, precision=p.stream_precision, name="router")]
        if c.n_shared_experts:
            ops += self._mlp(m_group, c.n_shared_experts * ffn_e // p.tp, "shared")
        # Tokens reach this chip's experts from every attention group of the stage.
        m_stage = m_group * p.attention_groups
        local = e // p.ep
        # Expected experts that receive at least one of the tokens (each picks k of e).
        active = local * (1.0 - (1.0 - k / e) ** m_stage)
        groups = max(1, round(active))
        per_expert = -(-m_stage * k * local // (e * groups))
        ops += self._mlp(max(1, per_expert), ffn_e // p.moe_tp, "experts", groups)
        return ops

    def _layers(self, m_group: int) -> tuple[Cost, Cost]:
        """Token-parallel ops of the busiest stage for `m_group` tokens of one attention group:
        (compute and memory, communication)."""
        cached = self._linear.get(m_group)
        if cached is not None:
            return cached
        c, sys = self.model, self.system
        h = c.hidden_size
        norms: list[Op] = [Reduce(rows=m_group, cols=h, precision=self.plan.stream_precision)] * 2
        common = graph_cost(self._attention_linear(m_group) + norms, sys)
        total = ZERO
        comm_total = ZERO
        for moe, count in self._kinds.items():
            mlp = self._moe(m_group) if moe else self._mlp(m_group, c.ffn_size // self.plan.tp, "mlp")
            total = total + count * (common + graph_cost(mlp, sys))
            comm_total = comm_total + count * graph_cost(self._comm(m_group, moe), sys)
        share = self._stage_layers
        if self.plan.pp > 1:
            sb = BYTES_PER_ELEMENT[self.plan.stream_precision]
            comm_total = comm_total * share + op_cost(
                SendRecv(ranks=2, bytes_per_rank=m_group * h * sb, name="pp"), sys
            )
        else:
            comm_total = comm_total * share
        cached = (total * share, comm_total)
        self._linear[m_group] = cached
        return cached

    def _head_cost(self, samplers: int) -> Cost:
        cost = self._head.get(samplers)
        if cost is None and self.layers_only:
            cost = ZERO
        if cost is None:
            c, p = self.model, self.plan
            sp = p.stream_precision
            ops: list[Op] = [
                Reduce(rows=samplers, cols=c.hidden_size, precision=sp),
                Matmul(m=samplers, n=c.vocab_size // p.tp, k=c.hidden_size, precision=sp, name="lm_head"),
            ]
            cost = graph_cost(ops, self.system)
            self._head[samplers] = cost
        return cost

    @property
    def _attention_precision(self) -> Precision:
        """Fused attention runs in the wider of the activation and KV formats, never in 4 bits."""
        prec = _wider(self.plan.act_precision, self.plan.kv_precision)
        return "fp8" if prec == "fp4" else prec

    def _attention_shape(self, batch: Batch) -> tuple[int, int, int, int, int]:
        """What the attention of one chip depends on: prefill sequences, their mean chunk and
        context, decode sequences and their mean context."""
        n_p, q, kv = self._share(batch.prefill_seqs), 0, 0
        if n_p:
            q = max(1, round(batch.prefill_tokens / batch.prefill_seqs))
            kv = max(q, round(batch.prefill_context / batch.prefill_seqs))
        n_d = self._share(batch.decode_seqs)
        return n_p, q, kv, n_d, max(1, round(batch.decode_context / batch.decode_seqs)) if n_d else 0

    def _attention_ops(self, batch: Batch) -> list[Op]:
        """Attention of one layer on one chip: a call for the prefill chunks, one for the decodes."""
        c, p = self.model, self.plan
        heads = self._heads_chip()
        prec = self._attention_precision
        ops: list[Op] = []
        n_p, q, kv, n_d, kv_d = self._attention_shape(batch)
        if n_p:
            if c.is_mla:
                assert c.kv_lora_rank and c.qk_nope_head_dim and c.qk_rope_head_dim and c.v_head_dim
                # Prefill expands the latent into per-head keys and values (no absorption).
                ops.append(
                    self._mm(n_p * kv, heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, "kv_b")
                )
                ops.append(Attention(batch=n_p, q_len=q, kv_len=kv, heads=heads, kv_heads=heads,
                                     head_dim=c.qk_nope_head_dim + c.qk_rope_head_dim,
                                     head_dim_v=c.v_head_dim, causal=True, precision=prec))  # fmt: skip
            else:
                ops.append(Attention(batch=n_p, q_len=q, kv_len=kv, heads=heads, kv_heads=self._kv_heads_chip(),
                                     head_dim=c.dim_per_head, causal=True, precision=prec,
                                     kv_precision=p.kv_precision))  # fmt: skip
        if n_d:
            kv = kv_d
            if c.is_mla:
                assert c.kv_lora_rank and c.qk_nope_head_dim and c.qk_rope_head_dim and c.v_head_dim
                # Decode absorbs the up-projections into the query and output (MQA on the latent).
                lat = c.kv_lora_rank
                ops.append(self._mm(n_d, lat, c.qk_nope_head_dim, "absorb_k", groups=heads))
                ops.append(Attention(batch=n_d, q_len=1, kv_len=kv, heads=heads, kv_heads=1,
                                     head_dim=lat + c.qk_rope_head_dim, head_dim_v=lat, shared_kv=True,
                                     precision=prec, kv_precision=p.kv_precision))  # fmt: skip
                ops.append(self._mm(n_d, c.v_head_dim, lat, "absorb_v", groups=heads))
            else:
                ops.append(Attention(batch=n_d, q_len=1, kv_len=kv, heads=heads, kv_heads=self._kv_heads_chip(),
                                     head_dim=c.dim_per_head, precision=prec,
                                     kv_precision=p.kv_precision))  # fmt: skip
        return ops

    def _attention(self, batch: Batch) -> Cost:
        ops = self._attention_ops(batch)
        return graph_cost(ops, self.system) * self._layers_per_stage if ops else ZERO

    # ---- the iteration -------------------------------------------------------------------
    def _power_capped(
        self, busy: float, layer_flops: float, attention_flops: float, head_flops: float, dram_bytes: float
    ) -> float:
        """The busy time of the iteration at the clock its TDP sustains (`power_capped`)."""
        e_layer, e_attention, e_head, e_byte = self._energy
        joules = (
            layer_flops * e_layer + attention_flops * e_attention + head_flops * e_head + dram_bytes * e_byte
        )
        return power_capped(self.system, busy, joules)

    def step(self, batch: Batch) -> StepCost:
        """Latency of one iteration and its parts (per chip of the busiest stage). When the
        power cap binds, the compute and memory parts stretch to the power floor."""
        if batch.tokens <= 0:
            return StepCost(0.0, {})
        layers, comm = self._layers(self._share(batch.tokens))
        head = self._head_cost(max(1, self._share(batch.samplers)))
        attention = self._attention(batch)
        busy = layers.time_s + attention.time_s + head.time_s
        dram = layers.dram_bytes + attention.dram_bytes + head.dram_bytes
        floor = self._power_capped(busy, layers.flops, attention.flops, head.flops, dram)
        parts = {"layers": layers, "attention": attention, "head": head}
        if floor > busy:
            stretch = floor / busy
            parts = {k: replace(v, time_s=v.time_s * stretch, compute_s=v.time_s * stretch,
                                memory_s=0.0, latency_s=0.0) for k, v in parts.items()}  # fmt: skip
        parts["communication"] = comm
        pp = self.plan.pp
        parts = {k: v * pp for k, v in parts.items()}
        return StepCost(sum(c.time_s for c in parts.values()), parts, power_capped=floor > busy)

    def step_time(self, batch: Batch) -> float:
        """`step(batch).time_s`, without the breakdown."""
        if batch.tokens <= 0:
            return 0.0
        layers, comm = self._layers(self._share(batch.tokens))
        head = self._head_cost(max(1, self._share(batch.samplers)))
        shape = self._attention_shape(batch)
        attention = self._attention_costs.get(shape)
        if attention is None:  # the same shape recurs from one iteration to the next
            t = flops = dram = 0.0
            for op in self._attention_ops(batch):
                c = op_cost(op, self.system)
                t, flops, dram = t + c.time_s, flops + c.flops, dram + c.dram_bytes
            if len(self._attention_costs) >= ATTENTION_SHAPES:
                self._attention_costs.clear()
            attention = self._attention_costs[shape] = (t, flops, dram)
        t, flops, dram = attention
        n = self._layers_per_stage
        busy = layers.time_s + n * t + head.time_s
        capped = self._power_capped(
            busy, layers.flops, n * flops, head.flops, layers.dram_bytes + n * dram + head.dram_bytes
        )
        return (capped + comm.time_s) * self.plan.pp
