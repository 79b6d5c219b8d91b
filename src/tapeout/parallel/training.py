"""How a training step is laid out on chips (Megatron-LM's conventions), and the structure that
follows: pipeline stages, micro-batches, the ranks each communicator spans, the data-parallel
gradient reduction and ZeRO's sharding.

`chips = tp x pp x cp x dp`. Tensor parallelism splits every layer `tp` ways (with sequence
parallelism the norms and dropout run on `1/tp` of the tokens and the all-reduces become
reduce-scatter plus all-gather); pipeline parallelism cuts the layers into `pp` stages, each
holding `vpp` interleaved chunks (when they do not divide evenly, the busiest stage holds
`ceil(layers / (pp x vpp))` layers per chunk and sets the pace); context parallelism splits
every sequence `cp` ways (ring attention); data parallelism replicates the rest `dp` ways.
Expert parallelism takes its `ep` ranks from the data- and context-parallel ranks, as
Megatron-Core does, so it needs no chips of its own. ZeRO 1, 2 and 3 shard the optimizer
states, then the gradients, then the weights over the data-parallel ranks; with `zero_shard`
over groups of that many neighbouring ranks instead, the groups holding replicas of each other
(hybrid sharding: PyTorch FSDP's HYBRID_SHARD, Megatron's `--num-distributed-optimizer-instances`,
a TPU slice's data axis replicated across slices), so the gathers stay in the group and only
the gradient shards cross between groups. `tp_overlap` runs sequence parallelism's all-gathers
and reduce-scatters in chunks under the matmuls next to them (Transformer Engine's userbuffers,
what NeMo's `tp_comm_overlap` and Megatron's `--tp-comm-overlap` turn on). `ep_overlap` runs one
micro-batch's expert all-to-alls while another micro-batch computes (DeepSeek-V3's DualPipe,
Megatron-Core's overlapped 1F1B for expert parallelism, MegaScale-MoE). `attention` is the
kernel: `flash` (fused, FlashAttention-2) or `unfused` (the score matrix written to memory, then
softmax, then the product with the values, as Megatron ran before fused kernels and as a new chip
runs before it has one).

Communicators see the ranks where Megatron puts them (tp innermost, then cp, dp, pp): a
data-parallel group spans domains `tp` chips apart, pipeline neighbours `tp x cp x dp` apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from tapeout.errors import TapeoutError, shown
from tapeout.parallel.fields import (
    CAPACITY_HELP,
    ROUTER_SKEW,
    ROUTER_SKEW_HELP,
    check_routing,
    check_widths,
    plan_field,
)
from tapeout.parallel.shard import Layout
from tapeout.precision import TRAINING, Numerics, Precision, parse
from tapeout.workloads.ops import AllGather, AllReduce, Collective, ReduceScatter

if TYPE_CHECKING:  # annotations only: the CLI builds its flags from these plans at start-up
    from tapeout.perf.system import System
    from tapeout.workloads.llm import LLMConfig

Recompute = Literal["none", "selective", "full"]
RECOMPUTE: tuple[Recompute, ...] = ("none", "selective", "full")
AttentionKernel = Literal["flash", "unfused"]
ATTENTION_KERNELS: tuple[AttentionKernel, ...] = ("flash", "unfused")
GRAD_BYTES = 4  # fp32 gradient accumulation (Megatron's main_grad)
OPTIMIZER_BYTES = 12  # fp32 master weights and Adam's two moments


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingPlan:
    """One parallel layout of a training step.

    >>> TrainingPlan(tp=8, pp=4).model_chips
    32
    """

    tp: int = plan_field(1, "Tensor-parallel ways.", searched=True)
    pp: int = plan_field(1, "Pipeline stages.", searched=True)
    dp: int | None = plan_field(None, "Data-parallel ways; default: chips / (tp x pp x cp).", searched=True)
    cp: int = plan_field(1, "Context-parallel ways.", searched=True)
    ep: int = plan_field(1, "Expert-parallel ways (taken from the data-parallel ranks).", searched=True)
    vpp: int = plan_field(1, "Interleaved pipeline chunks per stage.", searched=True)
    micro_batch: int = plan_field(1, "Sequences per micro-batch.", searched=True)
    sequence_parallel: bool = plan_field(False, "Split norms and dropout over the tp ranks.", searched=True)
    tp_overlap: bool = plan_field(
        False, "Overlap sequence-parallel communication with the matmuls.", case=False
    )
    ep_overlap: bool = plan_field(
        False, "Expert all-to-alls under another micro-batch's compute.", case=False
    )
    attention: AttentionKernel = plan_field(
        "flash", "Attention kernel: flash (fused) or unfused.", case=False
    )
    recompute: Recompute = plan_field("none", "Recomputation: none, selective or full.", searched=True)
    zero: int = plan_field(0, "ZeRO stage 0-3.", searched=True)
    zero_shard: int | None = plan_field(
        None, "Shard ZeRO over groups of N data-parallel ranks (hybrid sharding).", searched=True
    )
    precision: Precision = plan_field(
        "bf16", "Matmul precision (fp8 and int8 keep 16-bit attention).", case=False
    )
    router_skew: float = plan_field(ROUTER_SKEW, ROUTER_SKEW_HELP, case=False)
    capacity_factor: float | None = plan_field(None, CAPACITY_HELP, case=False)

    def __post_init__(self) -> None:
        check_widths(self, ("tp", "pp", "cp", "ep", "vpp", "micro_batch", "dp"))
        check_routing(self)
        if self.recompute not in RECOMPUTE:
            raise TapeoutError(f"field 'recompute': {self.recompute!r}; known: {', '.join(RECOMPUTE)}")
        parse(self.precision, "precision", TRAINING)
        self._check_overlaps()
        if self.zero not in (0, 1, 2, 3):
            raise TapeoutError(f"field 'zero': must be 0, 1, 2 or 3, got {shown(self.zero)}")
        if self.zero_shard is not None:
            check_widths(self, ("zero_shard",), "ranks")
            if self.zero == 0:
                raise TapeoutError(
                    f"field 'zero_shard': {self.zero_shard} ranks, but zero 0 shards nothing; set zero 1-3"
                )

    def _check_overlaps(self) -> None:
        if self.tp_overlap and not (self.tp > 1 and self.sequence_parallel):
            raise TapeoutError(
                f"field 'tp_overlap': overlaps sequence parallelism's all-gathers and reduce-scatters, so it "
                f"needs tp > 1 and sequence_parallel (got tp {self.tp}, sequence_parallel {self.sequence_parallel})"
            )
        if self.ep_overlap and self.ep == 1:
            raise TapeoutError(
                "field 'ep_overlap': overlaps the expert all-to-alls, so it needs ep > 1 (got ep 1)"
            )
        if self.attention not in ATTENTION_KERNELS:
            raise TapeoutError(
                f"field 'attention': {self.attention!r}; known: {', '.join(ATTENTION_KERNELS)}"
            )
        if self.attention == "unfused" and self.cp > 1:
            raise TapeoutError(
                f"field 'attention': context parallelism (cp {self.cp}) passes key/value blocks through a "
                "fused attention kernel; unfused attention needs cp 1"
            )

    # ---- what the plan implies ---------------------------------------------------------------
    @property
    def model_chips(self) -> int:
        """Chips that hold one copy of the model: tp x pp x cp."""
        return self.tp * self.pp * self.cp

    @property
    def numerics(self) -> Numerics:
        return Numerics.training(self.precision)

    @property
    def layout(self) -> Layout:
        return Layout(
            tp=self.tp, sequence_parallel=self.sequence_parallel, cp=self.cp, ep=self.ep, etp=self.tp,
            exchange=self.ep > 1, token_groups=self.ep,
        )  # fmt: skip

    def stage_layers(self, model: LLMConfig) -> int:
        """Layers on the busiest pipeline stage: `vpp` chunks of `ceil(layers / (pp x vpp))`."""
        return math.ceil(model.num_hidden_layers / (self.pp * self.vpp)) * self.vpp

    @property
    def in_flight(self) -> float:
        """Micro-batches whose activations the first stage holds at once (1F1B: pp; interleaved:
        a little more, Narayanan et al. 2021)."""
        if self.vpp == 1:
            return float(self.pp)
        return self.pp * (1 + (self.pp - 1) / (self.pp * self.vpp))

    def bubble(self, per_micro_batch_s: float) -> float:
        """The 1F1B pipeline's fill and drain: `(pp - 1) / vpp` micro-batch times."""
        return (self.pp - 1) / self.vpp * per_micro_batch_s

    def zero_group(self, ranks: int, stride: int) -> int:
        """Ranks a ZeRO group shards one weight's states over: all `ranks` holders (placed
        `stride` chips apart), or with `zero_shard` those of them inside one group's span of
        `zero_shard x tp` chips; 1 without ZeRO."""
        if self.zero == 0:
            return 1
        if self.zero_shard is None:
            return ranks
        return math.gcd(ranks, max(1, self.zero_shard * self.tp // stride))

    def describe(self, dp: int) -> str:
        return (
            f"tp {self.tp}, pp {self.pp}, dp {dp}, cp {self.cp}, micro_batch {self.micro_batch}, "
            f"recompute {self.recompute}, zero {self.zero}"
        )

    def resolve(self, model: LLMConfig, chips: int, seq_len: int, global_batch: int) -> tuple[int, int]:
        """Check the plan against the model, the chips and the batch: (dp, micro-batches per step).

        >>> from tapeout.workloads.models import get_model
        >>> TrainingPlan(tp=8, pp=5).resolve(get_model("llama-3.1-70b").config, 80, 8192, 16)
        (2, 8)
        >>> TrainingPlan(tp=3).resolve(get_model("llama-3.1-70b").config, 6, 8192, 16)
        Traceback (most recent call last):
        ...
        tapeout.errors.TapeoutError: field 'tp': 3 does not divide the 64 attention heads
        """
        if chips < 1:
            raise TapeoutError(f"field 'chips': must be >= 1, got {chips}")
        if seq_len < 1 or global_batch < 1:
            raise TapeoutError(
                f"fields 'seq_len' and 'global_batch': must be >= 1, got {seq_len} and {global_batch}"
            )
        self._check_model(model, seq_len)
        if chips % self.model_chips:
            raise TapeoutError(
                f"field 'chips': {chips} is not a multiple of tp x pp x cp = {self.model_chips}"
            )
        dp = chips // self.model_chips
        if self.dp is not None and self.dp != dp:
            raise TapeoutError(
                f"field 'dp': {self.dp}, but {chips} chips / (tp {self.tp} x pp {self.pp} x cp {self.cp}) = {dp}"
            )
        if self.ep > 1 and (dp * self.cp) % self.ep:
            raise TapeoutError(
                f"field 'ep': {self.ep} does not divide dp x cp = {dp * self.cp} (experts take their ranks "
                "from the data- and context-parallel ones)"
            )
        if self.zero_shard is not None and (dp * self.cp) % self.zero_shard:
            raise TapeoutError(
                f"field 'zero_shard': {self.zero_shard} ranks does not divide the dp x cp = {dp * self.cp} "
                "ranks that hold each weight"
            )
        if global_batch % (dp * self.micro_batch):
            raise TapeoutError(
                f"field 'global_batch': {global_batch} sequences do not split into dp {dp} x micro_batch "
                f"{self.micro_batch}"
            )
        return dp, global_batch // (dp * self.micro_batch)

    def _check_model(self, model: LLMConfig, seq_len: int) -> None:
        if model.num_attention_heads % self.tp:
            raise TapeoutError(
                f"field 'tp': {self.tp} does not divide the {model.num_attention_heads} attention heads"
            )
        if self.pp * self.vpp > model.num_hidden_layers:
            raise TapeoutError(
                f"field 'pp': {self.pp} stages x {self.vpp} chunks is more than the model's "
                f"{model.num_hidden_layers} layers"
            )
        if self.vpp > 1 and self.pp == 1:
            raise TapeoutError(f"field 'vpp': {self.vpp} interleaved chunks need pp > 1")
        if seq_len % (2 * self.cp) and self.cp > 1:
            raise TapeoutError(
                f"field 'cp': sequence length {seq_len} does not split into 2 x {self.cp} chunks (load-balanced ring)"
            )
        if self.ep > 1:
            if not model.is_moe:
                raise TapeoutError(f"field 'ep': {self.ep} for a model without experts")
            if model.experts % self.ep:
                raise TapeoutError(
                    f"field 'ep': {self.ep} does not divide the model's {model.experts} experts"
                )


@dataclass(frozen=True, slots=True)
class Holders:
    """Parameters one chip holds of a group of weights, and the data-parallel ranks that hold
    copies of them (`stride` chips apart): dense weights over dp x cp ranks `tp` apart, routed
    experts over dp x cp / ep ranks `tp x ep` apart (Megatron-Core's expert-data-parallel group)."""

    params: float
    ranks: int
    stride: int


def holders(plan: TrainingPlan, dp: int, dense: float, experts: float) -> tuple[Holders, Holders]:
    return (
        Holders(dense, dp * plan.cp, plan.tp),
        Holders(experts, dp * plan.cp // plan.ep, plan.tp * plan.ep),
    )


@lru_cache(maxsize=4096)
def communicator(system: System, ranks: int, *, stride: int) -> System:
    """The system as one communicator sees it: `ranks` chips placed `stride` apart.

    A scale-up domain holds `domain / stride` members of the group (at least one), and the
    group's hierarchical collectives send `size / members` per chip over the network, each chip
    over its own NIC (rail-optimized fabric), while the other groups of the domain do the same.
    """
    domain = system.scale_up_domain
    members = domain // stride if domain % stride == 0 else 1  # a stride that does not tile it: the network
    chips = max(ranks, 2)
    return dataclasses.replace(system, chips=chips, scale_up_domain=max(1, min(members, chips)))


@dataclass(frozen=True, slots=True)
class Sync:
    """One data-parallel collective of a step, on the communicator it runs over."""

    op: Collective
    system: System
    zero3_gather: bool = False  # ZeRO-3's weight gather: repeated every pass, not once a step


def gradient_sync(plan: TrainingPlan, group: Holders, system: System, weight_bytes: float) -> list[Sync]:
    """The data-parallel collectives of one group of weights in a step: the gradients reduced in
    16 bits over their holders (all-reduce; or reduce-scatter within ZeRO's group, and with
    hybrid sharding an all-reduce of one shard across the groups' replicas), and the updated
    weights gathered (after the step with ZeRO 1-2; for every pass with ZeRO-3)."""
    if group.ranks == 1 or group.params == 0:
        return []
    grads = group.params * 2
    shard = plan.zero_group(group.ranks, group.stride)
    if shard == 1:
        ar = AllReduce(ranks=group.ranks, bytes_per_rank=grads, name="dp.grads")
        return [Sync(ar, communicator(system, group.ranks, stride=group.stride))]
    inside = communicator(system, shard, stride=group.stride)
    out = [Sync(ReduceScatter(ranks=shard, bytes_per_rank=grads, name="dp.grads"), inside)]
    if shard < group.ranks:
        across = communicator(system, group.ranks // shard, stride=group.stride * shard)
        ar = AllReduce(ranks=group.ranks // shard, bytes_per_rank=grads / shard, name="dp.replicas")
        out.append(Sync(ar, across))
    gather = AllGather(ranks=shard, bytes_per_rank=group.params * weight_bytes, name="dp.weights")
    out.append(Sync(gather, inside, zero3_gather=plan.zero >= 3))
    return out


def exposed_gradient_sync(plan: TrainingPlan, sync_s: float, backward_s: float) -> float:
    """The part of the data-parallel gradient reduction the backward does not hide.

    Each model chunk's gradients are reduced as soon as its last micro-batch's backward is done
    (Megatron's overlapped gradient reduction). The first stage finishes its `vpp` chunks in
    the pipeline's drain, `pp` chunk-backwards apart, the last of them as the step's final
    work: the last chunk's reduction hides behind its own backward only, the others behind the
    gap to the next chunk. With one chunk this is the reduction less one micro-batch's backward.
    """
    chunk_sync, chunk_backward = sync_s / plan.vpp, backward_s / plan.vpp
    gap = plan.pp * chunk_backward
    return max(0.0, chunk_sync - chunk_backward) + (plan.vpp - 1) * max(0.0, chunk_sync - gap)
