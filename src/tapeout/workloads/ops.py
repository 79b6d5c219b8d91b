"""The closed op vocabulary. Every workload, from one GEMM to an LLM decode step, lowers to these.

Each op is a frozen value that knows its exact FLOPs and the bytes it must move at minimum
(each operand read once, each result written once); how much more a real chip moves is the
cost rules' business. A new kind needs a reason: the cost rules dispatch on `OpKind`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

from tapeout.precision import nbytes

T = TypeVar("T")
_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def rebuild(obj: T, **changes: Any) -> T:
    """A frozen dataclass with some fields changed: `dataclasses.replace` without its per-call
    introspection (graphs are rebuilt op by op in every simulation's innermost loop).

    >>> rebuild(Matmul(m=1, n=2, k=3), m=8).m
    8
    """
    cls = type(obj)
    names = _INIT_FIELDS.get(cls)
    if names is None:
        names = _INIT_FIELDS[cls] = tuple(f.name for f in fields(cls) if f.init)  # type: ignore[arg-type]
    kwargs = {n: getattr(obj, n) for n in names}
    kwargs.update(changes)
    return cls(**kwargs)


class OpKind(enum.Enum):
    MATMUL = "matmul"  # (grouped) m x n x k products
    ATTENTION = "attention"  # fused flash-style attention, forward or backward
    ELEMENTWISE = "elementwise"  # pointwise maps: activations, residual adds, casts, STREAM kernels
    REDUCE = "reduce"  # row reductions that read and write a tensor: norms, softmax
    GATHER = "gather"  # embedding lookups with pooling
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    SEND_RECV = "send_recv"
    COPY = "copy"  # a memory-to-memory or host-to-device transfer


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    kind: ClassVar[OpKind]
    name: str = ""

    @property
    def flops(self) -> float:
        return 0.0

    @property
    def bytes(self) -> float:
        """Minimum bytes to and from memory (or over the wire, for collectives)."""
        return 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Matmul(Op):
    """`groups` independent (m x k) @ (k x n) products (grouped GEMM when > 1, as for MoE
    experts). Inputs in `precision`, output in `out_precision`; the (k x n) operand (the
    weights) is stored in `weight_precision` when given (weight-only quantization: stored
    narrow, widened to `precision` on the fly)."""

    kind: ClassVar[OpKind] = OpKind.MATMUL
    m: int
    n: int
    k: int
    groups: int = 1
    precision: str = "bf16"
    out_precision: str = "bf16"
    weight_precision: str | None = None

    def __post_init__(self) -> None:
        if min(self.m, self.n, self.k, self.groups) <= 0:
            raise ValueError(f"matmul {self.name!r}: m, n, k, groups must be positive")

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.groups

    @property
    def bytes(self) -> float:
        a = nbytes(self.m * self.k * self.groups, self.precision)
        b = nbytes(self.k * self.n * self.groups, self.weight_precision or self.precision)
        return a + b + nbytes(self.m * self.n * self.groups, self.out_precision)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attention(Op):
    """Fused attention of `batch` sequences: q_len queries against kv_len keys per sequence,
    `heads` query heads sharing `kv_heads` key/value heads (GQA; MLA enters as its latent
    head dims). `causal` masks the upper triangle (queries are the last q_len positions).
    `backward` is the FlashAttention-2 backward pass alone (recomputing the scores)."""

    kind: ClassVar[OpKind] = OpKind.ATTENTION
    batch: int
    q_len: int
    kv_len: int
    heads: int
    kv_heads: int
    head_dim: int
    head_dim_v: int | None = None
    causal: bool = False
    backward: bool = False
    precision: str = "bf16"
    kv_precision: str | None = None
    shared_kv: bool = False  # values are the first head_dim_v columns of the keys (MLA's latent)

    def __post_init__(self) -> None:
        if min(self.batch, self.q_len, self.kv_len, self.heads, self.kv_heads, self.head_dim) <= 0:
            raise ValueError(f"attention {self.name!r}: sizes must be positive")
        if self.heads % self.kv_heads:
            raise ValueError(f"attention {self.name!r}: heads {self.heads} not a multiple of kv_heads")

    @property
    def dv(self) -> int:
        return self.head_dim_v or self.head_dim

    @property
    def score_pairs(self) -> float:
        """(query, key) pairs that are computed, per head, summed over the batch."""
        q, kv = self.q_len, self.kv_len
        if not self.causal:
            return float(self.batch * q * kv)
        # Query i (0-based among the last q of kv positions) sees kv - q + i + 1 keys.
        return self.batch * (q * (kv - q) + q * (q + 1) / 2)

    @property
    def flops(self) -> float:
        fwd = 2.0 * self.score_pairs * self.heads * (self.head_dim + self.dv)
        # Backward: dV = P^T dO, dP = dO V^T, dS -> dQ, dK, plus recomputing S = Q K^T:
        # 2.5x the forward's matmul FLOPs (FlashAttention-2, section 3.1).
        return 2.5 * fwd if self.backward else fwd

    @property
    def bytes(self) -> float:
        kvp = self.kv_precision or self.precision
        q = nbytes(self.batch * self.q_len * self.heads * self.head_dim, self.precision)
        o = nbytes(self.batch * self.q_len * self.heads * self.dv, self.precision)
        width = self.head_dim if self.shared_kv else self.head_dim + self.dv
        kv = nbytes(self.batch * self.kv_len * self.kv_heads * width, kvp)
        # Backward reads q, k, v, o, dO and writes dq, dk, dv.
        return 2 * (q + o + kv) if self.backward else q + o + kv


@dataclass(frozen=True, slots=True, kw_only=True)
class Elementwise(Op):
    """A pointwise map over `elements`, reading `reads` and writing `writes` tensors of that
    size, with `flops_per_element` arithmetic. STREAM triad is reads=2, writes=1, 2 flops."""

    kind: ClassVar[OpKind] = OpKind.ELEMENTWISE
    elements: float
    reads: int = 1
    writes: int = 1
    flops_per_element: float = 1.0
    precision: str = "bf16"

    @property
    def flops(self) -> float:
        return self.elements * self.flops_per_element

    @property
    def bytes(self) -> float:
        return nbytes(self.elements * (self.reads + self.writes), self.precision)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reduce(Op):
    """Row-wise normalisation or softmax: `rows` x `cols`, read once, written once."""

    kind: ClassVar[OpKind] = OpKind.REDUCE
    rows: int
    cols: int
    flops_per_element: float = 5.0  # RMSNorm: square, sum, scale, multiply by weight
    precision: str = "bf16"

    @property
    def flops(self) -> float:
        return self.rows * self.cols * self.flops_per_element

    @property
    def bytes(self) -> float:
        return nbytes(2.0 * self.rows * self.cols + self.cols, self.precision)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gather(Op):
    """Embedding lookups: `lookups` rows of `dim` elements from a table of `rows` rows, summed
    into `outputs` pooled vectors. `cached` is the share of lookups served by hot rows kept in
    on-chip SRAM."""

    kind: ClassVar[OpKind] = OpKind.GATHER
    lookups: float
    dim: int
    rows: int
    outputs: float
    precision: str = "fp32"
    cached: float = 0.0

    @property
    def flops(self) -> float:
        return max(self.lookups - self.outputs, 0.0) * self.dim

    @property
    def bytes(self) -> float:
        return nbytes((self.lookups + self.outputs) * self.dim, self.precision)


Algorithm = Literal["auto", "ring", "tree", "nvls"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Collective(Op):
    """A collective over `ranks` chips. `bytes_per_rank` is the payload each rank holds, in
    the nccl-tests convention: the full buffer for all_reduce and all_to_all, the output
    buffer for all_gather, the input buffer for reduce_scatter, the message for send_recv."""

    ranks: int
    bytes_per_rank: float
    algorithm: Algorithm = "auto"

    def __post_init__(self) -> None:
        if self.ranks < 1 or self.bytes_per_rank < 0:
            raise ValueError(f"collective {self.name!r}: ranks >= 1 and bytes_per_rank >= 0")

    @property
    def bytes(self) -> float:
        """Bytes each rank sends on the wire with a bandwidth-optimal algorithm."""
        n, s = self.ranks, self.bytes_per_rank
        return 0.0 if n == 1 else (n - 1) / n * s

    @property
    def bus_factor(self) -> float:
        """nccl-tests' bus bandwidth over algorithm bandwidth."""
        n = self.ranks
        return (n - 1) / n if n > 1 else 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AllReduce(Collective):
    kind: ClassVar[OpKind] = OpKind.ALL_REDUCE

    @property
    def flops(self) -> float:  # one add per fp32 element received in the reduce-scatter half
        return self.bytes / 8

    @property
    def bytes(self) -> float:
        n = self.ranks
        return 0.0 if n == 1 else 2 * (n - 1) / n * self.bytes_per_rank

    @property
    def bus_factor(self) -> float:
        n = self.ranks
        return 2 * (n - 1) / n if n > 1 else 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AllGather(Collective):
    kind: ClassVar[OpKind] = OpKind.ALL_GATHER


@dataclass(frozen=True, slots=True, kw_only=True)
class ReduceScatter(Collective):
    kind: ClassVar[OpKind] = OpKind.REDUCE_SCATTER

    @property
    def flops(self) -> float:
        return self.bytes / 4


@dataclass(frozen=True, slots=True, kw_only=True)
class AllToAll(Collective):
    kind: ClassVar[OpKind] = OpKind.ALL_TO_ALL


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRecv(Collective):
    kind: ClassVar[OpKind] = OpKind.SEND_RECV

    @property
    def bytes(self) -> float:
        return self.bytes_per_rank

    @property
    def bus_factor(self) -> float:
        return 1.0


COLLECTIVES: dict[str, type[Collective]] = {
    c.kind.value: c for c in (AllReduce, AllGather, ReduceScatter, AllToAll, SendRecv)
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Op):
    """A device-memory to device-memory copy of `size_bytes` (read once, written once)."""

    kind: ClassVar[OpKind] = OpKind.COPY
    size_bytes: float

    @property
    def bytes(self) -> float:
        return 2 * self.size_bytes
