"""How one model replica is laid out on chips for inference, and the formats it runs in.

A replica spans `pp` pipeline stages of `max(tp, ep)` chips each:
- attention and dense layers are split `tp` ways (Megatron column/row split, one all-reduce
  after the attention output and one after the MLP);
- experts are spread over `ep` chips of a stage, each expert's FFN split over the remaining
  `stage_chips / ep` chips (TensorRT-LLM's moe_tp x moe_ep = tp, vLLM's expert parallelism);
- when `ep > tp`, the stage runs `ep / tp` attention groups of `tp` chips side by side, each
  on its own share of the sequences (DeepSeek's data-parallel attention in front of wide
  expert parallelism), and tokens travel to their experts by all-to-all.
With `pp` stages an iteration's sequences are cut into `pp` micro-batches that fill the
pipeline: an iteration takes `pp` times the busiest stage, which holds `ceil(layers / pp)`
layers and one end of the model (the embedding or the output head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapeout.errors import TapeoutError
from tapeout.parallel.fields import (
    CAPACITY_HELP,
    ROUTER_SKEW,
    ROUTER_SKEW_HELP,
    check_routing,
    check_widths,
    plan_field,
)
from tapeout.parallel.shard import Layout
from tapeout.precision import SERVING, Numerics, Precision, parse

if TYPE_CHECKING:  # annotations only: the CLI builds its flags from these plans at start-up
    from tapeout.workloads.llm import LLMConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class InferencePlan:
    """Parallelism and formats of one replica.

    >>> InferencePlan(tp=2, precision="fp8").stage_chips
    2
    """

    tp: int = plan_field(1, "Tensor-parallel ways.")
    pp: int = plan_field(1, "Pipeline stages.")
    ep: int = plan_field(1, "Expert-parallel ways.")
    precision: Precision = plan_field("bf16", "Weights (and activations unless --act-precision).", case=False)
    act_precision: Precision | None = plan_field(None, "Activations; default: --precision.", case=False)
    kv_precision: Precision | None = plan_field(None, "KV cache; default: --precision.")
    router_skew: float = plan_field(ROUTER_SKEW, ROUTER_SKEW_HELP, case=False)
    capacity_factor: float | None = plan_field(None, CAPACITY_HELP, case=False)

    def __post_init__(self) -> None:
        check_widths(self, ("tp", "pp", "ep"))
        check_routing(self)
        if max(self.tp, self.ep) % min(self.tp, self.ep):
            raise TapeoutError(
                f"fields 'tp' and 'ep': one must divide the other (experts are spread over the "
                f"chips of a pipeline stage), got tp {self.tp}, ep {self.ep}"
            )
        parse(self.precision, "precision", SERVING)
        for name in ("act_precision", "kv_precision"):
            if getattr(self, name) is not None:
                parse(getattr(self, name), name, SERVING)

    @property
    def numerics(self) -> Numerics:
        return Numerics.serving(
            weights=self.precision,
            activations=self.act_precision or self.precision,
            kv=self.kv_precision or self.precision,
        )

    @property
    def stage_chips(self) -> int:
        return max(self.tp, self.ep)

    @property
    def attention_groups(self) -> int:
        """Attention groups of `tp` chips side by side in one stage."""
        return self.stage_chips // self.tp

    @property
    def chips(self) -> int:
        """Chips of one replica."""
        return self.stage_chips * self.pp

    @property
    def moe_tp(self) -> int:
        """Ways each expert's FFN is split."""
        return self.stage_chips // self.ep

    @property
    def layout(self) -> Layout:
        return Layout(
            tp=self.tp, ep=self.ep, etp=self.moe_tp, exchange=self.ep > self.tp,
            token_groups=self.attention_groups,
        )  # fmt: skip

    def stage_layers(self, model: LLMConfig) -> int:
        """Layers on the busiest pipeline stage."""
        return math.ceil(model.num_hidden_layers / self.pp)

    def describe(self) -> str:
        return f"tp {self.tp}, pp {self.pp}, ep {self.ep}, weights in {self.precision}"

    def replicas(self, model: LLMConfig, chips: int, chip_id: str = "") -> int:
        """Check the plan against the model and the chip count; the number of replicas.

        >>> from tapeout.workloads.models import get_model
        >>> InferencePlan(tp=3).replicas(get_model("llama-2-70b").config, 6)
        Traceback (most recent call last):
        ...
        tapeout.errors.TapeoutError: field 'tp': 3 does not divide the 64 attention heads of the model
        """
        if chips < 1:
            raise TapeoutError(f"field 'chips': must be >= 1, got {chips}")
        if model.num_attention_heads % self.tp:
            raise TapeoutError(
                f"field 'tp': {self.tp} does not divide the {model.num_attention_heads} attention heads of the model"
            )
        if self.pp > model.num_hidden_layers:
            raise TapeoutError(
                f"field 'pp': {self.pp} pipeline stages for a model of {model.num_hidden_layers} layers"
            )
        if self.ep > 1:
            if not model.is_moe:
                raise TapeoutError(f"field 'ep': {self.ep} for a model without experts (ep must be 1)")
            if model.experts % self.ep:
                raise TapeoutError(
                    f"field 'ep': {self.ep} does not divide the model's {model.experts} experts"
                )
        widths = [(model.ffn_size, self.tp, "FFN")]
        if model.is_moe:
            widths.append((model.moe_intermediate_size or model.ffn_size, self.moe_tp, "expert FFN"))
        for width, ways, what in widths:
            if width % ways:
                raise TapeoutError(f"field 'tp': the {what} width {width} does not split {ways} ways")
        if chips % self.chips:
            on = f" of {chip_id}" if chip_id else ""
            raise TapeoutError(
                f"field 'chips': {chips}{on} is not a multiple of the {self.chips} chips of one replica "
                f"(tp {self.tp} x pp {self.pp}" + (f", ep {self.ep})" if self.ep > 1 else ")")
            )
        return chips // self.chips
