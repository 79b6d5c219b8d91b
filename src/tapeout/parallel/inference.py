"""How one model replica is laid out on chips for inference, and the precisions it runs in.

A replica spans `pp` pipeline stages of `max(tp, ep)` chips each:
- attention and dense layers are split `tp` ways (Megatron column/row split, one all-reduce
  after the attention output and one after the MLP);
- experts are spread over `ep` chips of a stage, each expert's FFN split over the remaining
  `stage_chips / ep` chips (TensorRT-LLM's moe_tp x moe_ep = tp, vLLM's expert parallelism);
- when `ep > tp`, the stage runs `ep / tp` attention groups of `tp` chips side by side, each
  on its own share of the sequences (DeepSeek's data-parallel attention in front of wide
  expert parallelism).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import BYTES_PER_ELEMENT, Precision
from tapeout.workloads.llm import LLMConfig

SERVING_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "fp4")


def _check_precision(field: str, value: str) -> None:
    if value not in SERVING_PRECISIONS:
        raise TapeoutError(
            f"field '{field}': unknown precision {value!r}; known: {', '.join(SERVING_PRECISIONS)}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InferencePlan:
    """Parallelism and precisions of one replica.

    >>> InferencePlan(tp=2, weight_precision="fp8").stage_chips
    2
    """

    tp: int = 1
    pp: int = 1
    ep: int = 1
    weight_precision: Precision = "bf16"
    act_precision: Precision = "bf16"
    kv_precision: Precision = "bf16"

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TapeoutError(f"field '{name}': must be an integer >= 1, got {value!r}")
        if max(self.tp, self.ep) % min(self.tp, self.ep):
            raise TapeoutError(
                f"fields 'tp' and 'ep': one must divide the other (experts are spread over the "
                f"chips of a pipeline stage), got tp {self.tp}, ep {self.ep}"
            )
        for name in ("weight_precision", "act_precision", "kv_precision"):
            _check_precision(name, getattr(self, name))
        assert set(SERVING_PRECISIONS) <= set(get_args(Precision))

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
    def compute_precision(self) -> Precision:
        """Matmuls run in the wider of the weight and activation formats (weight-only
        quantization widens the weights on the fly)."""
        w, a = self.weight_precision, self.act_precision
        return w if BYTES_PER_ELEMENT[w] > BYTES_PER_ELEMENT[a] else a

    @property
    def stream_precision(self) -> Precision:
        """The residual stream and what crosses the wires between layers: 16-bit unless the
        activations are wider."""
        a = self.act_precision
        return a if a in ("bf16", "fp16") else "bf16"

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
