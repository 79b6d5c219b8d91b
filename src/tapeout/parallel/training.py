"""How a training step is laid out on chips (Megatron-LM's conventions).

`chips = tp x pp x cp x dp`. Tensor parallelism splits every layer `tp` ways (with sequence
parallelism the norms and dropout run on `1/tp` of the tokens and the all-reduces become
reduce-scatter plus all-gather); pipeline parallelism cuts the layers into `pp` stages, each
holding `vpp` interleaved chunks (when they do not divide evenly, the busiest stage holds
`ceil(layers / (pp x vpp))` layers per chunk and sets the pace); context parallelism splits every sequence `cp` ways (ring
attention); data parallelism replicates the rest `dp` ways. Expert parallelism takes its `ep`
ranks from the data- and context-parallel ranks, as Megatron-Core does, so it needs no chips
of its own. ZeRO 1, 2 and 3 shard the optimizer states, then the gradients, then the weights
over the data-parallel ranks; with `zero_shard` over groups of that many neighbouring ranks
instead, the groups holding replicas of each other (hybrid sharding: PyTorch FSDP's
HYBRID_SHARD, Megatron's `--num-distributed-optimizer-instances`, a TPU slice's data axis
replicated across slices), so the gathers stay in the group and only the gradient shards cross
between groups. `tp_overlap` runs sequence parallelism's all-gathers and
reduce-scatters in chunks under the matmuls next to them (Transformer Engine's userbuffers, what
NeMo's `tp_comm_overlap` and Megatron's `--tp-comm-overlap` turn on). `ep_overlap` runs one
micro-batch's expert all-to-alls while another micro-batch computes (DeepSeek-V3's DualPipe,
Megatron-Core's overlapped 1F1B for expert parallelism, MegaScale-MoE). `attention` is the
kernel: `flash` (fused, FlashAttention-2) or `unfused` (the score matrix written to memory, then
softmax, then the product with the values, as Megatron ran before fused kernels and as a new chip
runs before it has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import Precision
from tapeout.workloads.llm import LLMConfig

Recompute = Literal["none", "selective", "full"]
RECOMPUTE: tuple[Recompute, ...] = ("none", "selective", "full")
AttentionKernel = Literal["flash", "unfused"]
ATTENTION_KERNELS: tuple[AttentionKernel, ...] = ("flash", "unfused")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingPlan:
    """One parallel layout of a training step.

    >>> TrainingPlan(tp=8, pp=4).model_chips
    32
    """

    tp: int = 1
    pp: int = 1
    dp: int | None = None  # derived from the chip count when not given
    cp: int = 1
    ep: int = 1
    vpp: int = 1
    micro_batch: int = 1
    sequence_parallel: bool = False
    tp_overlap: bool = False  # tensor-parallel communication overlapped with the matmuls
    ep_overlap: bool = False  # one micro-batch's expert all-to-alls under another's compute
    attention: AttentionKernel = "flash"  # fused (FlashAttention) or scores kept in memory
    recompute: Recompute = "none"
    zero: int = 0
    zero_shard: int | None = None  # ranks one ZeRO group shards over (None: all data-parallel ranks)
    precision: Precision = "bf16"  # of the matmuls (fp8 and int8 keep bf16 attention and weights)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "ep", "vpp", "micro_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TapeoutError(f"field '{name}': must be an integer >= 1, got {value!r}")
        if self.dp is not None and self.dp < 1:
            raise TapeoutError(f"field 'dp': must be an integer >= 1, got {self.dp!r}")
        if self.recompute not in RECOMPUTE:
            raise TapeoutError(f"field 'recompute': {self.recompute!r}; known: {', '.join(RECOMPUTE)}")
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
        if self.zero not in (0, 1, 2, 3):
            raise TapeoutError(f"field 'zero': must be 0, 1, 2 or 3, got {self.zero!r}")
        if self.zero_shard is not None:
            if not isinstance(self.zero_shard, int) or self.zero_shard < 1:
                raise TapeoutError(
                    f"field 'zero_shard': must be an integer >= 1 ranks, got {self.zero_shard!r}"
                )
            if self.zero == 0:
                raise TapeoutError(
                    f"field 'zero_shard': {self.zero_shard} ranks, but zero 0 shards nothing; set zero 1-3"
                )

    @property
    def model_chips(self) -> int:
        """Chips that hold one copy of the model: tp x pp x cp."""
        return self.tp * self.pp * self.cp

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
        if chips % self.model_chips:
            raise TapeoutError(
                f"field 'chips': {chips} is not a multiple of tp x pp x cp = {self.model_chips}"
            )
        dp = chips // self.model_chips
        if self.dp is not None and self.dp != dp:
            raise TapeoutError(
                f"field 'dp': {self.dp}, but {chips} chips / (tp {self.tp} x pp {self.pp} x cp {self.cp}) = {dp}"
            )
        if self.ep > 1:
            if not model.is_moe:
                raise TapeoutError(f"field 'ep': {self.ep} for a model without experts")
            if model.experts % self.ep:
                raise TapeoutError(
                    f"field 'ep': {self.ep} does not divide the model's {model.experts} experts"
                )
            if (dp * self.cp) % self.ep:
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
