"""One LLM replica on its chips: the latency of one serving iteration, composed from costed graphs.

An iteration (one forward pass of a continuous-batching engine) carries any mix of prefill
chunks and decode tokens. Its graphs come from `workloads.transformer`, split by
`parallel.shard` for one chip of the busiest pipeline stage, and costed by `perf.graph_cost`:
- the token-parallel ops of every layer (projections, MLP or experts, norms, the collectives)
  see all the tokens of the iteration, so they are costed once per token count and cached;
- the core attention is costed per iteration: one call for the prefill chunks and one for the
  decode sequences, at their mean context (decode attention streams the KV cache, so its
  time is linear in the total context);
- the output head runs only for the sequences that sample a token.
With `pp` stages the sequences are cut into `pp` micro-batches that fill the pipeline, so an
iteration takes `pp` stage times and every sequence advances by one token. A sustained load
runs at the clock its TDP allows: the iteration's energy (from the cost rules) over its busy time
sets it (`perf.power`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tapeout.errors import TapeoutError
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.memory import KV_MEMORY_FRACTION, Memory, serving_memory
from tapeout.parallel.shard import Layout, shard
from tapeout.perf.cost import ZERO, Cost
from tapeout.perf.rules import graph_cost, op_cost
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT, Numerics
from tapeout.units import GB
from tapeout.workloads import transformer
from tapeout.workloads.graph import Graph, Phase, Role
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.moe import RouterStats
from tapeout.workloads.ops import SendRecv

ATTENTION_SHAPES = 1 << 16  # attention costs a replica keeps (a few MB), cleared when full
SHARED_REPLICAS = 16  # replicas (model, system, plan) whose costs the process keeps


@dataclass
class _Costs:
    """What a replica has costed, by size: its token-parallel ops (compute and memory,
    communication) by tokens, the head by sampled sequences, an attention call by shape.
    Replicas of one model, system and plan share them."""

    layers: dict[int, tuple[Cost, Cost]] = field(default_factory=dict)
    head: dict[int, Cost] = field(default_factory=dict)
    attention: dict[tuple[int, int, int], Cost] = field(default_factory=dict)


_COSTS: dict[tuple[object, ...], _Costs] = {}


def _costs(key: tuple[object, ...]) -> _Costs:
    costs = _COSTS.pop(key, None) or _Costs()
    if len(_COSTS) >= SHARED_REPLICAS:
        del _COSTS[next(iter(_COSTS))]  # the least recently built
    _COSTS[key] = costs
    return costs


def lower_replica(
    model: LLMConfig, plan: InferencePlan, layers_only: bool = False
) -> tuple[list[tuple[float, Graph, Graph]], dict[str, Graph]]:
    """One chip's share of a replica's graphs, lowered once with their dynamic dimensions at one
    (an inference plan splits none of them): per kind of layer, its count on the busiest stage
    with its compute and its collectives (the embedding with them when there is one stage); and
    the head, a prefill and a decode attention call (`head`, `prefill`, `decode`)."""
    m, num, lay = model, plan.numerics, plan.layout
    assert not lay.sequence_parallel  # instantiating sharded templates needs no split tokens
    router = RouterStats(plan.router_skew, plan.capacity_factor)
    share = plan.stage_layers(m) / m.num_hidden_layers
    kinds = [(count * share, shard(transformer.layer_template(m, num, moe, False, router).ops(), lay))
             for moe, count in transformer.census(m)]  # fmt: skip
    if not layers_only and plan.pp == 1:  # with stages, the embedding is on another one
        kinds.append((1.0, shard(transformer.embedding(m, 1, num), lay).ops()))
    templates = {
        "head": shard(transformer.head(m, 1, num), lay).ops(),
        "prefill": shard(transformer.attention_template(m, num, Phase.PREFILL), lay).ops(),
        "decode": shard(transformer.attention_template(m, num, Phase.DECODE, False, "absorbed"), lay).ops(),
    }
    return [(n, g.compute(), g.communication()) for n, g in kinds], templates


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
    memory: Memory = field(init=False)
    numerics: Numerics = field(init=False)
    layout: Layout = field(init=False)
    _costs: _Costs = field(init=False)
    _stage_layers: int = field(init=False, default=1)
    _parts: int = field(init=False, default=1)  # pipeline stages x attention groups
    # One chip's share of the graphs, lowered once with their dynamic dimensions at one (an
    # inference plan splits none of them): layers per kind with their counts on the busiest
    # stage, the embedding, the head, a prefill and a decode attention call.
    # The token-parallel ops as (count, compute, collectives), the embedding's with them.
    _templates: dict[str, Graph] = field(init=False, default_factory=dict)
    _layer_kinds: list[tuple[float, Graph, Graph]] = field(init=False, default_factory=list)

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
        replica.numerics = num = plan.numerics
        system.chip.require_formats(
            {
                "act_precision" if plan.act_precision else "precision": num.compute,
                "kv_precision": num.attention,
            }
        )
        replica.layout = plan.layout
        replica._stage_layers = plan.stage_layers(model)
        replica._parts = plan.pp * plan.attention_groups
        replica.memory = replica._memory(kv_memory_fraction)
        replica._lower()
        replica._costs = _costs((model, system, plan, layers_only))
        return replica

    def _lower(self) -> None:
        self._layer_kinds, self._templates = lower_replica(self.model, self.plan, self.layers_only)

    @property
    def router(self) -> RouterStats:
        """The routing statistics the plan states (MoE layers)."""
        return RouterStats(self.plan.router_skew, self.plan.capacity_factor)

    @property
    def _stage_share(self) -> float:
        """Share of the model's layers on the busiest stage."""
        return self._stage_layers / self.model.num_hidden_layers

    def _share(self, count: int) -> int:
        """Of `count` things of the replica, those one attention group of one micro-batch sees."""
        return -(-count // self._parts) if count else 0

    # ---- memory --------------------------------------------------------------------------
    def _memory(self, kv_fraction: float) -> Memory:
        m, p, num = self.model, self.plan, self.numerics
        kinds = [
            (count, shard(transformer.layer(m, 1, num, moe=moe, router=self.router), p))
            for moe, count in transformer.census(m)
        ]
        stage = self._stage_share * Graph.join(count * g for count, g in kinds)
        workspace = max((g for _, g in kinds), key=lambda g: g.bytes_of(Role.WORKSPACE))
        if not self.layers_only:
            ends = [shard(transformer.embedding(m, 1, num), p), shard(transformer.head(m, 1, num), p)]
            if p.pp > 1:  # the busiest stage holds one end of the model
                ends = [max(ends, key=lambda g: g.bytes_of(Role.WEIGHT))]
            stage = Graph.join([stage, *ends])
            workspace = workspace + shard(transformer.head(m, 1, num), p)
        chip = self.system.chip
        return serving_memory(
            chip.id, chip.memory.capacity_gb * GB, stage=stage, workspace=workspace,
            tokens=-(-self.max_tokens // p.attention_groups), kv_fraction=kv_fraction, plan=p.describe(),
        )  # fmt: skip

    # ---- costs ---------------------------------------------------------------------------
    def _layers(self, m_group: int) -> tuple[Cost, Cost]:
        """Token-parallel ops of the busiest stage for `m_group` tokens of one attention group:
        (compute and memory, communication)."""
        cached = self._costs.layers.get(m_group)
        if cached is not None:
            return cached
        m, p, sys, num = self.model, self.plan, self.system, self.numerics
        compute = Cost.total(graph_cost(g, sys, tokens=m_group) * n for n, g, _ in self._layer_kinds)
        comm = Cost.total(graph_cost(g, sys, tokens=m_group) * n for n, _, g in self._layer_kinds)
        if p.pp > 1:
            size = m_group * m.hidden_size * BYTES_PER_ELEMENT[num.stream]
            comm = comm + op_cost(SendRecv(ranks=2, bytes_per_rank=size, name="pp"), sys)
        self._costs.layers[m_group] = (compute, comm)
        return compute, comm

    def _head_cost(self, samplers: int) -> Cost:
        if self.layers_only:
            return ZERO
        cost = self._costs.head.get(samplers)
        if cost is None:
            cost = graph_cost(self._templates["head"], self.system, tokens=samplers)
            self._costs.head[samplers] = cost
        return cost

    def _attention_shape(self, batch: Batch) -> tuple[int, int, int, int, int]:
        """What the attention of one chip depends on: prefill sequences, their mean chunk and
        context, decode sequences and their mean context."""
        n_p, q, kv = self._share(batch.prefill_seqs), 0, 0
        if n_p:
            q = max(1, round(batch.prefill_tokens / batch.prefill_seqs))
            kv = max(q, round(batch.prefill_context / batch.prefill_seqs))
        n_d = self._share(batch.decode_seqs)
        return n_p, q, kv, n_d, max(1, round(batch.decode_context / batch.decode_seqs)) if n_d else 0

    def _attention_call(self, kind: str, batch: int, q: int, kv: int) -> Cost:
        """One attention call (`prefill` chunks, or `decode` steps) in one layer, cached by shape
        (the same shape recurs from one iteration to the next)."""
        key = (batch, q, kv) if kind == "prefill" else (-batch, q, kv)
        known = self._costs.attention
        cost = known.get(key)
        if cost is None:
            cost = graph_cost(self._templates[kind], self.system, batch=batch, q=q, kv=kv)
            if len(known) >= ATTENTION_SHAPES:
                known.clear()
            known[key] = cost
        return cost

    def _attention(self, batch: Batch) -> tuple[float, float]:
        """One iteration's attention on one chip, over the stage's layers: seconds and joules. A
        call for the prefill chunks (the latent of multi-head latent attention expanded), one for
        the decodes (absorbed)."""
        n_p, q, kv, n_d, kv_d = self._attention_shape(batch)
        layers = self._stage_layers
        t = e = 0.0
        if n_p:
            c = self._attention_call("prefill", n_p, q, kv)
            t, e = c.time_s * layers, c.energy_j * layers
        if n_d:
            c = self._attention_call("decode", n_d, 1, kv_d)
            t, e = t + c.time_s * layers, e + c.energy_j * layers
        return t, e

    def _attention_cost(self, batch: Batch) -> Cost:
        """`_attention` with its breakdown."""
        n_p, q, kv, n_d, kv_d = self._attention_shape(batch)
        calls = [self._attention_call("prefill", n_p, q, kv)] if n_p else []
        if n_d:
            calls.append(self._attention_call("decode", n_d, 1, kv_d))
        return Cost.total(calls, self._stage_layers)

    # ---- the iteration -------------------------------------------------------------------
    def step(self, batch: Batch) -> StepCost:
        """Latency of one iteration and its parts (per chip of the busiest stage). When the
        power cap binds, the compute and memory parts stretch to the power floor."""
        if batch.tokens <= 0:
            return StepCost(0.0, {})
        layers, comm = self._layers(self._share(batch.tokens))
        attention, head = self._attention_cost(batch), self._head_cost(max(1, self._share(batch.samplers)))
        busy = layers.time_s + attention.time_s + head.time_s
        floor = self.system.capped(busy, layers.energy_j + attention.energy_j + head.energy_j)
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
        """`step(batch).time_s`, without the breakdown (the simulators' innermost call)."""
        if batch.tokens <= 0:
            return 0.0
        layers, comm = self._layers(self._share(batch.tokens))
        head = self._head_cost(max(1, self._share(batch.samplers)))
        attention_s, attention_j = self._attention(batch)
        busy = layers.time_s + attention_s + head.time_s
        capped = self.system.capped(busy, layers.energy_j + attention_j + head.energy_j)
        return (capped + comm.time_s) * self.plan.pp
