"""The number formats a chip computes in, and their rules, in one place: how a value rounds into
each format, what happens past its largest value, and how a tensor is scaled into it (one scale
per tensor, per channel, or per block of the reduction axis).

Rules and their sources:

- fp8 e4m3 and e5m2 are the OCP 8-bit floating point formats (OCP OFP8 specification, revision
  1.0, 2023-06-20, section 5.1): e4m3 has no infinity and one NaN pattern per sign (0x7F, 0xFF),
  largest finite value 448; e5m2 follows IEEE 754 (infinities at 0x7C/0xFC), largest finite
  value 57344. Values round to nearest, ties to even (torch's `float8_e4m3fn` and `float8_e5m2`
  casts, checked bit by bit in the tests).
- Casts saturate (OFP8 section 5.2, "saturation mode"): a magnitude past the largest finite value,
  infinity included, becomes the largest finite value of its sign; NaN stays NaN. This is how the
  software stacks cast into fp8 (CUDA `__nv_cvt_float_to_fp8` with `__NV_SATFINITE`; Transformer
  Engine clips scaled values to the fp8 range). torch's own e5m2 cast overflows to infinity
  instead, so the clamp is explicit here, before the cast.
- Scaled formats take `scale = max_value / amax` and store `cast(x * scale)`; the value read back
  is the stored one times `1 / scale` (Transformer Engine, FP8 current and delayed scaling:
  "scaling_factor = FP8_MAX / amax", margin 0). An amax of zero takes scale 1.
- int8 is symmetric with no zero point: `scale = 127 / amax`, round half to even, clip to
  [-128, 127] (TensorRT developer guide, "Working with INT8": s = amax / 127,
  roundWithTiesToEven(clip(x / s, -128, 127))). Calibrated values land in [-127, 127]; only values
  past the calibrated amax reach -128.
- bf16 rounds to nearest even (torch's cast); it and fp32 carry no scale. Matmuls accumulate in
  fp32 (`ACCUMULATOR`).

A format's width in bytes is `tapeout.precision.BYTES_PER_ELEMENT` of its precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch  # noqa: TID251  (the compiler is the one place torch is imported)
import torch.nn.functional as F  # noqa: TID251

from tapeout.errors import TapeoutError, unknown_id
from tapeout.precision import BYTES_PER_ELEMENT

Granularity = Literal["per_tensor", "per_channel", "block"]
GRANULARITIES: tuple[Granularity, ...] = ("per_tensor", "per_channel", "block")


@dataclass(frozen=True, slots=True, kw_only=True)
class Format:
    """One number format: `precision` is its name in `tapeout.precision`, `dtype` the torch dtype
    that holds it, `max_value` its largest finite magnitude, `scaled` whether tensors enter it
    through a scale."""

    name: str
    precision: str
    dtype: torch.dtype
    max_value: float
    scaled: bool

    @property
    def bits(self) -> int:
        """Width in bits, from `tapeout.precision.BYTES_PER_ELEMENT`."""
        return int(8 * BYTES_PER_ELEMENT[self.precision])


E4M3 = Format(name="e4m3", precision="fp8", dtype=torch.float8_e4m3fn, max_value=448.0, scaled=True)
E5M2 = Format(name="e5m2", precision="fp8", dtype=torch.float8_e5m2, max_value=57344.0, scaled=True)
INT8 = Format(name="int8", precision="int8", dtype=torch.int8, max_value=127.0, scaled=True)
BF16 = Format(
    name="bf16",
    precision="bf16",
    dtype=torch.bfloat16,
    max_value=torch.finfo(torch.bfloat16).max,
    scaled=False,
)
FP32 = Format(
    name="fp32", precision="fp32", dtype=torch.float32, max_value=torch.finfo(torch.float32).max, scaled=False
)
ACCUMULATOR = FP32
FORMATS: dict[str, Format] = {f.name: f for f in (E4M3, E5M2, INT8, BF16, FP32)}
INT8_RANGE = (-128, 127)  # TensorRT's clip range; calibrated values stay within +-127


def get_format(name: str) -> Format:
    """The format called `name`.

    >>> get_format("e4m3").max_value
    448.0
    """
    if name not in FORMATS:
        raise unknown_id("number format", name, FORMATS)
    return FORMATS[name]


def encode(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """`x` (already scaled) stored in `fmt`: a tensor of `fmt.dtype`, saturating at the format's
    largest value, NaN kept (fp8), round half to even and clipped to [-128, 127] (int8).

    >>> encode(torch.tensor([1e6, -1e6]), E4M3).view(torch.uint8).tolist()
    [126, 254]
    """
    x = x.float()
    if fmt.dtype == torch.int8:
        return torch.round(x).clamp_(*INT8_RANGE).to(torch.int8)
    if fmt.scaled:  # fp8: clamp keeps NaN and turns +-inf into +-max
        return torch.clamp(x, -fmt.max_value, fmt.max_value).to(fmt.dtype)
    return x.to(fmt.dtype)


def round_to(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """The fp32 tensor of the values `x` takes when stored in `fmt` without a scale.

    >>> round_to(torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8]), BF16).tolist()
    [1.0, 1.015625]
    """
    if fmt is FP32:
        return x if x.dtype == torch.float32 else x.float()
    return encode(x, fmt).float()


def _blocks(x: torch.Tensor, k_axis: int, block: int) -> torch.Tensor:
    """`x` with its reduction axis moved last and split into blocks: [..., K / block, block],
    zero-padded when K is not a multiple of `block`."""
    moved = x.movedim(k_axis, -1)
    pad = -moved.shape[-1] % block
    if pad:
        moved = F.pad(moved, (0, pad))
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // block, block)


def _unblocks(xb: torch.Tensor, k_axis: int, k: int) -> torch.Tensor:
    """The inverse of `_blocks` for a reduction axis of length `k`."""
    flat = xb.reshape(*xb.shape[:-2], xb.shape[-2] * xb.shape[-1])[..., :k]
    return flat.movedim(-1, k_axis)


def amax(x: torch.Tensor, granularity: Granularity, *, k_axis: int = -1, block: int = 128) -> torch.Tensor:
    """Largest magnitude of `x` per scaling group, in fp32: one value (per_tensor); one per vector
    along the reduction axis `k_axis`, kept as a size-1 axis (per_channel: a weight's output
    channels, an activation's tokens); one per `block` consecutive values along `k_axis`, shaped
    [..., K / block, 1] with `k_axis` moved last (block).

    >>> amax(torch.ones(3, 256), "block").shape
    torch.Size([3, 2, 1])
    """
    mag = x.detach().float().abs()
    if granularity == "per_tensor":
        return mag.amax()
    if granularity == "per_channel":
        return mag.amax(dim=k_axis, keepdim=True)
    if granularity == "block":
        return _blocks(mag, k_axis, block).amax(dim=-1, keepdim=True)
    raise TapeoutError(
        f"field 'granularity': unknown scaling {granularity!r}; known: {', '.join(GRANULARITIES)}"
    )


def amax_shape(
    shape: tuple[int, ...], granularity: Granularity, *, k_axis: int = -1, block: int = 128
) -> tuple[int, ...]:
    """The shape `amax` returns for a tensor of `shape`.

    >>> amax_shape((4, 300), "block", k_axis=-1, block=128)
    (4, 3, 1)
    """
    if granularity == "per_tensor":
        return ()
    k = k_axis % len(shape)
    if granularity == "per_channel":
        return tuple(1 if i == k else n for i, n in enumerate(shape))
    rest = tuple(n for i, n in enumerate(shape) if i != k)
    return (*rest, -(-shape[k] // block), 1)


def scale_of(amax_: torch.Tensor, fmt: Format) -> torch.Tensor:
    """The multiplier that maps `amax_` onto the format's largest value (1 where amax is 0).

    >>> scale_of(torch.tensor([896.0, 0.0]), E4M3).tolist()
    [0.5, 1.0]
    """
    return torch.where(amax_ > 0, fmt.max_value / amax_, torch.ones_like(amax_))


def fake_quantize(
    x: torch.Tensor,
    fmt: Format,
    amax_: torch.Tensor,
    granularity: Granularity,
    *,
    k_axis: int = -1,
    block: int = 128,
) -> torch.Tensor:
    """`x` scaled into `fmt` with scales from `amax_`, stored, and read back as fp32: the values
    a matrix unit multiplies. Unscaled formats only round.

    >>> fake_quantize(torch.tensor([1.0, 100.0, 1000.0]), E4M3, torch.tensor(448.0), "per_tensor").tolist()
    [1.0, 96.0, 448.0]
    """
    if not fmt.scaled:
        return round_to(x, fmt)
    scale = scale_of(amax_, fmt)
    inverse = 1.0 / scale
    if granularity == "block":
        xb = _blocks(x.float(), k_axis, block)
        out = torch.empty_like(x, dtype=torch.float32)  # the input's strides: kernels pick layouts by them
        return out.copy_(_unblocks(encode(xb * scale, fmt).float() * inverse, k_axis, x.shape[k_axis]))
    return encode(x.float() * scale, fmt).float() * inverse
