"""Lowering of recommendation models (the DLRM family) to the op graph, and the statistics of their
embedding ids.

The graph is the whole system's work for a batch of `pairs` user-item pairs: per table, the
pooled multi-hot lookups (`Gather`: `pooling` rows per pair summed into one vector); the
all-to-all that brings pooled vectors (and the ids) between the chips that own tables and
those that own the pairs; the bottom MLP over dense features, the interaction (pairwise dot
products as a batched matmul; DCN-v2 cross layers; a transformer over the user history) and
the top MLP. `parallel.shard` gives a chip its share: the dense part data-parallel (`dp`), the
tables by their placement (`table`), the rows cached on chip (`hot`). A training graph's tables
carry their fused backward (FBGEMM's TBE with exact row-wise Adagrad): each lookup reads its
bag's gradient, the sums land on the distinct rows touched, and each distinct row is rewritten
once with its Adagrad accumulator. Hot rows: each table's ids follow a Zipf law of exponent
`skew_alpha` (0: uniform).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from tapeout.precision import Precision, at_least_16, nbytes
from tapeout.workloads.graph import Graph, Node, Split
from tapeout.workloads.ops import AllToAll, Attention, Elementwise, Gather, Matmul, Op
from tapeout.workloads.recsys import EmbeddingTable, RecsysConfig

INDEX_BYTES = 4
# Training keeps fp32 master tables and an element-wise (exact) Adagrad accumulator of the same
# shape, also fp32: the MLPerf reference (TorchRec `torch.optim.Adagrad` -> FBGEMM EXACT_ADAGRAD)
# and NVIDIA's HugeCTR submissions (`RaggedStaticEmbeddingTable`: float table, float AdaGrad
# state of `emb_table_size_` elements) both do; mixed precision covers the MLPs and the wires.
TRAINING_EMBEDDING_PRECISION: Precision = "fp32"
ADAGRAD_STATE_PRECISION: Precision = "fp32"
DP_M, DP_ELEMENTS = (Split("dp", "m"),), (Split("dp", "elements"),)
# A recommendation graph's dynamic dimension: its pairs. Lowered for one pair per chip, a chip's
# sharded graph is instantiated for any batch with `.at(pairs=...)`.
PAIRS = ("pairs",)


# ---- id statistics ----------------------------------------------------------------------------
def _harmonic(n: float, alpha: float) -> float:
    """sum_{i=1..n} i^-alpha, by the Euler-Maclaurin approximation (exact enough beyond 10 rows)."""
    if n <= 0:
        return 0.0
    if n <= 64:
        return float(sum(i**-alpha for i in range(1, int(n) + 1)))
    if abs(alpha - 1.0) < 1e-9:
        return math.log(n) + 0.5772156649 + 1 / (2 * n)
    tail: float = (n ** (1 - alpha) - 1) / (1 - alpha) + 0.5 * (1 + n**-alpha)
    return tail


def hit_rates(tables: Sequence[EmbeddingTable], cache_rows: float) -> list[float]:
    """Share of each table's lookups that hit the cached rows, with the cache holding the
    `cache_rows` rows of highest access probability over all tables (water-filling on one
    probability threshold).

    >>> t = EmbeddingTable(rows=100, dim=8, pooling=1)
    >>> hit_rates([t, EmbeddingTable(rows=1000, dim=8, pooling=1)], 100)
    [1.0, 0.0]
    """
    return list(_hit_rates(tuple(tables), float(cache_rows)))


@lru_cache(maxsize=256)
def _hit_rates(tables: tuple[EmbeddingTable, ...], cache_rows: float) -> tuple[float, ...]:
    if cache_rows <= 0:
        return (0.0,) * len(tables)
    total = sum(t.rows for t in tables)
    if cache_rows >= total:
        return (1.0,) * len(tables)
    norms = [_harmonic(t.rows, t.skew_alpha) for t in tables]
    rows = np.array([float(t.rows) for t in tables])
    # The access probability (per sample) of each table's hottest row.
    top = np.array([t.pooling / h for t, h in zip(tables, norms, strict=True)])
    zipf = np.array([t.skew_alpha != 0 for t in tables])
    power = np.array([1 / t.skew_alpha if t.skew_alpha else 0.0 for t in tables])

    def cached(tau: float) -> npt.NDArray[np.float64]:
        """Rows of each table whose access probability (per sample) is at least `tau` > 0."""
        return np.where(zipf, np.minimum(rows, (top / tau) ** power), np.where(top >= tau, rows, 0.0))

    lo, hi = 0.0, float(top.max()) * 2
    for _ in range(80):  # the threshold at which the cache is just full
        mid = (lo + hi) / 2
        if cached(mid).sum() > cache_rows:
            lo = mid
        else:
            hi = mid
    counts = cached(hi).tolist()
    # Uniform tables are cached whole or not at the threshold; the room left goes to the densest
    # one not yet cached, in part.
    left = cache_rows - sum(counts)
    waiting = [i for i, t in enumerate(tables) if t.skew_alpha == 0 and counts[i] == 0]
    for i in sorted(waiting, key=lambda i: -tables[i].pooling / tables[i].rows):
        if left < 1:
            break
        counts[i] = min(float(tables[i].rows), left)
        left -= counts[i]
    return tuple(
        (c / t.rows if t.skew_alpha == 0 else min(1.0, _harmonic(c, t.skew_alpha) / h)) if c >= 1 else 0.0
        for t, c, h in zip(tables, counts, norms, strict=True)
    )


def distinct_rows(table: EmbeddingTable, draws: float) -> float:
    """Expected number of distinct rows among `draws` ids drawn from the table's Zipf law:
    sum over rows of 1 - exp(-draws * p_row), on log-spaced rank buckets.

    >>> t = EmbeddingTable(rows=10**6, dim=8)
    >>> round(distinct_rows(t, 10**6) / 10**6, 3)  # uniform: 1 - 1/e of the rows
    0.632
    >>> distinct_rows(t, 10) == distinct_rows(EmbeddingTable(rows=10**6, dim=8, skew_alpha=1.0), 10)
    False
    """
    if draws <= 0:
        return 0.0
    r = float(table.rows)
    if table.skew_alpha == 0:
        return r * -math.expm1(-draws / r)
    edges = np.unique(np.round(np.geomspace(1, r + 1, 512)))
    mid = np.sqrt(edges[:-1] * edges[1:])
    p = mid**-table.skew_alpha / _harmonic(r, table.skew_alpha)
    return float(np.sum(np.diff(edges) * -np.expm1(-draws * p)))


# ---- lowering ---------------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def _table_split(i: int) -> tuple[Split, ...]:
    """Table `i`'s lookups and outputs split by the tables' placement, its cached share by the hot rows."""
    return (
        Split("table", "lookups", index=i),
        Split("table", "outputs", index=i),
        Split("hot", "cached", index=i),
    )


def tables(
    model: RecsysConfig, pairs: float, embedding: Precision, wire: Precision, *, training: bool
) -> Graph:
    """The lookups of every table for `pairs` pairs (with their fused backward when `training`)."""
    nodes: list[Node] = []
    rows = sum(t.rows for t in model.tables)
    for i, t in enumerate(model.tables):
        lookups = pairs * t.pooling
        forward = Gather(
            lookups=lookups, dim=t.dim, rows=rows, outputs=pairs, precision=embedding, name="embedding"
        )
        grad: tuple[Op, ...] | None = None
        if training:
            touched = distinct_rows(t, lookups)
            grad = (
                Gather(lookups=lookups, dim=t.dim, rows=rows, outputs=0, precision=wire, name="embedding.grad"),
                Gather(lookups=touched, dim=t.dim, rows=rows, outputs=touched, precision=embedding,
                       name="embedding.rows"),
                Gather(lookups=touched, dim=t.dim, rows=rows, outputs=touched, precision=ADAGRAD_STATE_PRECISION,
                       name="embedding.adagrad"),
            )  # fmt: skip
        nodes.append(
            Node(forward, split=_table_split(i), grad=grad, dims=(("lookups", PAIRS), ("outputs", PAIRS)))
        )
    return Graph(tuple(nodes))


def exchange(model: RecsysConfig, pairs: float, wire: Precision) -> Graph:
    """The all-to-alls between table owners and pair owners: pooled vectors (and back, as
    gradients, in a backward) and the ids (forward only). Bytes are the whole system's; each
    rank sends its share."""
    pooled = nbytes(pairs * len(model.tables) * model.embedding_dim, wire)
    ids = pairs * model.lookups_per_sample * INDEX_BYTES
    over = (Split("table", "ranks"), Split("dp", "bytes_per_rank"))
    dims = (("bytes_per_rank", PAIRS),)
    return Graph((
        Node(AllToAll(ranks=1, bytes_per_rank=pooled, name="pooled"), split=over, dims=dims),
        Node(AllToAll(ranks=1, bytes_per_rank=ids, name="ids"), split=over, grad=(), dims=dims),
    ))  # fmt: skip


def _mlp(nodes: list[Node], rows: int, first: int, widths: Sequence[int], precision: Precision) -> int:
    prev = first
    for w in widths:
        nodes.append(Node(Matmul(m=rows, n=w, k=prev, precision=precision, out_precision=precision, name="mlp"),
                          split=DP_M, dims=(("m", PAIRS),)))  # fmt: skip
        nodes.append(Node(Elementwise(elements=rows * w, reads=1, writes=1, precision=precision, name="relu"),
                          split=DP_ELEMENTS, dims=(("elements", PAIRS),)))  # bias and ReLU  # fmt: skip
        prev = w
    return prev


def dense(model: RecsysConfig, rows: int, precision: Precision) -> Graph:
    """The bottom MLP, the interaction and the top MLP for `rows` pairs."""
    nodes: list[Node] = []
    d = model.embedding_dim
    if model.bottom_mlp:
        _mlp(nodes, rows, max(1, model.dense_features), model.bottom_mlp, precision)
    inter = model.interaction
    width = model.interaction_width
    n = len(model.tables) + (1 if model.bottom_mlp else 0)

    def mm(m: int, n_: int, k: int, groups: int = 1, split: tuple[Split, ...] = DP_M) -> None:
        op = Matmul(
            m=m, n=n_, k=k, groups=groups, precision=precision, out_precision=precision, name="interaction"
        )
        nodes.append(Node(op, split=split, dims=tuple((s.dim, PAIRS) for s in split)))

    if inter.kind == "dot":
        mm(n, n, d, groups=rows, split=(Split("dp", "groups"),))
    elif inter.kind == "dcn":
        for _ in range(inter.layers):
            if inter.low_rank:
                mm(rows, inter.low_rank, width)
                mm(rows, width, inter.low_rank)
            else:
                mm(rows, width, width)
            # x_{l+1} = x0 * (W x_l + b) + x_l
            cross = Elementwise(elements=rows * width, reads=3, writes=1, flops_per_element=3, precision=precision,
                                name="cross")  # fmt: skip
            nodes.append(Node(cross, split=DP_ELEMENTS, dims=(("elements", PAIRS),)))
    else:
        assert inter.heads and inter.history_len
        length = inter.history_len
        for _ in range(inter.layers):
            mm(rows * length, 4 * d, d)
            core = Attention(batch=rows, q_len=length, kv_len=length, heads=inter.heads, kv_heads=inter.heads,
                             head_dim=max(1, d // inter.heads), causal=True, precision=at_least_16(precision),
                             name="history")  # fmt: skip
            nodes.append(Node(core, split=(Split("dp", "batch"),), dims=(("batch", PAIRS),)))
            mm(rows * length, d, d)
            mm(rows * length, 4 * d, d)
            mm(rows * length, d, 4 * d)
    _mlp(nodes, rows, width, model.top_mlp, precision)
    return Graph(tuple(nodes))


def forward(model: RecsysConfig, pairs: int, *, dense_precision: Precision, embedding_precision: Precision,
            training: bool = False) -> Graph:  # fmt: skip
    """The whole system's forward for `pairs` pairs: tables, exchange, dense part."""
    wire = at_least_16(dense_precision)
    return Graph.join([
        tables(model, pairs, embedding_precision, wire, training=training),
        exchange(model, pairs, wire),
        dense(model, pairs, dense_precision),
    ])  # fmt: skip
