"""Number formats: their widths, which formats stand in for which, and the formats each part of a
workload runs in. The one place that knows these rules; plans, lowering, cost rules and energy
read them from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from tapeout.errors import TapeoutError

Precision = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
BYTES_PER_ELEMENT: dict[str, float] = {
    "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "fp4": 0.5,
}  # fmt: skip

# What a chip runs a format as when it lacks it, in order: the next wider format it has (fp8 on
# an A100 runs as fp16), as a compiler would upcast.
FALLBACKS: dict[str, tuple[Precision, ...]] = {
    "fp4": ("fp4", "fp8", "bf16", "fp16"),
    "fp8": ("fp8", "bf16", "fp16"),
    "int8": ("int8", "fp8", "bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
    "bf16": ("bf16", "fp16"),
    "tf32": ("tf32", "fp32"),
    "fp32": ("fp32", "tf32"),
}

# The formats each workload accepts for its matmuls (a plan refuses the others by name).
SERVING: tuple[Precision, ...] = ("bf16", "fp16", "fp8", "int8", "fp4")
TRAINING: tuple[Precision, ...] = ("bf16", "fp16", "fp8", "int8", "fp32")
RECSYS: tuple[Precision, ...] = ("fp32", "bf16", "fp16", "fp8", "int8", "fp4")


def nbytes(elements: float, precision: str) -> float:
    """Bytes of `elements` values in `precision`.

    >>> nbytes(10, "fp4")
    5.0
    """
    return elements * BYTES_PER_ELEMENT[precision]


def narrow(precision: str) -> bool:
    """An 8- or 4-bit format: the matrix units run it at a multiple of the 16-bit rate."""
    return BYTES_PER_ELEMENT[precision] < 2


def wider(a: Precision, b: Precision) -> Precision:
    """The wider of two formats (the first on a tie)."""
    return a if BYTES_PER_ELEMENT[a] >= BYTES_PER_ELEMENT[b] else b


def at_least_16(precision: Precision) -> Precision:
    """What a value kept between ops travels and accumulates in: narrow formats widen to bf16
    (residual streams, wires between chips, pooled sums, outputs of 8-bit matmuls)."""
    return "bf16" if narrow(precision) else precision


def parse(value: object, field: str, allowed: Iterable[Precision] = PRECISIONS) -> Precision:
    """`value` as a precision among `allowed`, or an error naming the field and the known ones.

    >>> parse("fp8", "precision", SERVING)
    'fp8'
    """
    for p in allowed:
        if p == value:
            return p
    raise TapeoutError(f"field '{field}': unknown precision {value!r}; known: {', '.join(allowed)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Numerics:
    """The formats one workload runs in: weights at rest and as its matmuls read them, the inputs
    of its matmuls, the residual stream and what crosses the wires, the tokens sent to the
    experts, fused attention, the key/value cache, and the output layer. Plans build it from
    their fields; lowering reads it.

    >>> Numerics.serving(weights="fp4", activations="bf16", kv="fp8").compute
    'bf16'
    """

    stored: Precision
    weights: Precision
    compute: Precision
    stream: Precision
    dispatch: Precision
    attention: Precision
    kv: Precision
    head: Precision

    @classmethod
    def serving(cls, *, weights: Precision, activations: Precision, kv: Precision) -> Numerics:
        """Inference engines: matmuls in the wider of the weight and activation formats (weight-only
        quantization widens the weights on the fly); tokens go to the experts in the matmuls'
        format (quantized before the dispatch); attention in the wider of the activation and KV
        formats, never in 4 bits; the stream and the output layer in 16 bits at least."""
        attention = wider(activations, kv)
        stream = at_least_16(activations)
        compute = wider(weights, activations)
        return cls(stored=weights, weights=weights, compute=compute, stream=stream, dispatch=compute,
                   attention="fp8" if attention == "fp4" else attention, kv=kv, head=stream)  # fmt: skip

    @classmethod
    def training(cls, precision: Precision) -> Numerics:
        """Training frameworks: the layers' matmuls in `precision`; weights kept in 16 bits (8-bit
        recipes cast them on the fly), attention, the stream and the output layer in 16 bits at
        least (Transformer Engine's fp8 layers and AQT cover the transformer layers' linear
        modules only; Megatron-Bridge, docs/training/moe-optimization.md: "embeddings, output
        layer, gradients, optimizer stay in original precision"). Megatron-Core's all-to-all token
        dispatcher sends the 16-bit hidden states; the expert matmuls cast them after it."""
        wide = at_least_16(precision)
        return cls(stored=wide, weights=precision, compute=precision, stream=wide, dispatch=wide, attention=wide,
                   kv=wide, head=wide)  # fmt: skip
