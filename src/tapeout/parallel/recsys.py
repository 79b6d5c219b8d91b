"""How a recommendation model is laid out on chips: the dense part data-parallel, the embedding
tables placed by a sharding (replicated, whole tables, rows or columns), and what each chip's
share of the work is (`layout`, for `parallel.shard`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tapeout.errors import DoesNotFit, TapeoutError
from tapeout.parallel.fields import plan_field
from tapeout.parallel.shard import Layout
from tapeout.precision import BYTES_PER_ELEMENT, RECSYS, Precision, parse
from tapeout.units import GB

if TYPE_CHECKING:  # annotations only: the CLI builds its flags from these plans at start-up
    from tapeout.workloads.recsys import RecsysConfig

Sharding = Literal["auto", "data", "table", "row", "column"]
SHARDINGS: tuple[Sharding, ...] = ("auto", "data", "table", "row", "column")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecsysPlan:
    """The tables' sharding and the formats of the dense math and of the tables.

    >>> RecsysPlan(precision="int8").tables(training=True)
    'fp32'
    """

    sharding: Sharding = plan_field(
        "auto", "Embedding sharding: auto, data, table, row or column.", case=False
    )
    precision: Precision | None = plan_field(
        None, "Dense math; default: int8 for inference, bf16 for training.", case=False
    )
    embedding_precision: Precision | None = plan_field(
        None, "Embedding tables; default: the dense format (fp32 master rows in training).", case=False
    )

    def __post_init__(self) -> None:
        if self.sharding not in SHARDINGS:
            raise TapeoutError(f"field 'sharding': {self.sharding!r}; known: {', '.join(SHARDINGS)}")
        if self.precision is not None:
            parse(self.precision, "precision", RECSYS)
        if self.embedding_precision is not None:
            parse(self.embedding_precision, "embedding_precision", RECSYS)

    def dense(self, *, training: bool) -> Precision:
        """The dense part's format: as given, else int8 for inference (MLPerf's DLRM inference
        submissions) and bf16 for training (mixed precision; no one trains DLRM's MLPs in int8)."""
        return self.precision or ("bf16" if training else "int8")

    def tables(self, *, training: bool) -> Precision:
        """The tables' format: as given, else fp32 master rows in training, else the dense format."""
        if self.embedding_precision is not None:
            return self.embedding_precision
        # imported here, not at the top: the CLI builds its flags from this plan at start-up
        from tapeout.workloads.dlrm import TRAINING_EMBEDDING_PRECISION

        return TRAINING_EMBEDDING_PRECISION if training else self.dense(training=False)


@dataclass(frozen=True, slots=True)
class Placement:
    """Which chips hold which share of each table. Under `table` sharding `owners[t]` maps chip ->
    share of table t's rows; the uniform shardings keep no map (`owners` is empty): every chip holds
    every table under `data`, and 1/chips of each under `row` and `column`."""

    kind: Sharding
    owners: tuple[dict[int, float], ...]
    chips: int

    @property
    def replicated(self) -> bool:
        return self.kind == "data"

    def lookups_share(self, chip: int, tables: int) -> list[float]:
        """Share of each of the `tables` tables' lookups served by `chip`."""
        if not self.owners:
            return [1.0 / self.chips] * tables
        return [o.get(chip, 0.0) for o in self.owners]

    def most_held(self, sizes: list[float]) -> float:
        """The bytes of the chip that holds the most, given each table's bytes."""
        if self.replicated:
            return sum(sizes)
        if not self.owners:
            return sum(sizes) / self.chips
        held: dict[int, float] = {}
        for size, owners in zip(sizes, self.owners, strict=True):
            for c, share in owners.items():
                held[c] = held.get(c, 0.0) + share * size
        return max(held.values(), default=0.0)

    def layout(self, chip: int, hot: tuple[float, ...]) -> Layout:
        """What `chip` runs of the whole system's graph: its 1/chips of the pairs, its share of each
        table, `hot[t]` of table t's lookups from on-chip SRAM, the pooled vectors exchanged among
        all chips unless every chip holds every table."""
        return Layout(dp=self.chips, tables=tuple(self.lookups_share(chip, len(hot))), hot=hot,
                      table_ranks=1 if self.replicated else self.chips)  # fmt: skip


def place(
    model: RecsysConfig, chips: int, capacity_bytes: float, precision: Precision, sharding: Sharding = "auto"
) -> Placement:
    """Place the tables on `chips` chips of `capacity_bytes` each for embeddings.

    `data` replicates every table; `table` puts whole tables on chips, the largest lookup load
    first onto the least loaded chip that has room, splitting by rows a table whose lookups
    exceed a chip's fair share or whose bytes exceed any chip's room; `row` splits every table's
    rows evenly; `column` splits every table's columns evenly (same memory and lookup balance as
    rows, more all-to-all messages). `auto` replicates when the tables fit on one chip, else
    shards by table.

    >>> from tapeout.workloads.models import get_model
    >>> p = place(get_model("dlrm-v2").config, 8, 20e9, "int8")
    >>> p.kind, round(sum(sum(o.values()) for o in p.owners))
    ('table', 26)
    """
    if sharding not in SHARDINGS:
        raise TapeoutError(f"field 'sharding': {sharding!r}; known: {', '.join(SHARDINGS)}")
    bpe = BYTES_PER_ELEMENT[precision]
    sizes = [t.rows * t.dim * bpe for t in model.tables]
    total = sum(sizes)
    if sharding == "auto":
        sharding = "data" if total <= capacity_bytes else "table"
    if sharding == "data":
        if total > capacity_bytes:
            raise DoesNotFit(
                f"sharding 'data': the tables take {total / GB:.1f} GB, more than the {capacity_bytes / GB:.1f} GB "
                "each chip has for them"
            )
        return Placement("data", (), chips)
    if total > capacity_bytes * chips:
        raise DoesNotFit(
            f"the tables take {total / GB:.1f} GB; {chips} chips hold {capacity_bytes * chips / GB:.1f} GB for "
            f"embeddings ({capacity_bytes / GB:.1f} GB each) in any sharding"
        )
    if sharding in ("row", "column"):
        return Placement(sharding, (), chips)
    return Placement("table", _by_table(model, chips, capacity_bytes, sizes), chips)


def _by_table(model: RecsysConfig, chips: int, capacity_bytes: float, sizes: list[float]) -> tuple[dict[int, float], ...]:  # fmt: skip
    """Whole tables, heaviest lookup load first, onto the least loaded chip with room; a table
    heavier than a chip's fair share of the lookups, or bigger than any chip's room, is split by
    rows into enough equal shards (TorchRec's and HugeCTR's table-row-wise placement)."""
    work = [t.pooling * t.dim for t in model.tables]
    fair = sum(work) / chips
    # Chips 0 .. len(load) - 1 hold something; the rest hold nothing and, all alike and the least
    # loaded, are taken in order: the loop is linear in the chips used, not in the system's.
    load: list[float] = []
    used: list[float] = []
    owners: list[dict[int, float]] = [{} for _ in sizes]
    for i in sorted(range(len(sizes)), key=lambda i: -work[i]):
        parts = min(chips, max(1, round(work[i] / fair), math.ceil(sizes[i] / capacity_bytes)))
        while True:
            piece = sizes[i] / parts
            empty = chips - len(load) if piece <= capacity_bytes else 0
            holding = (
                []
                if empty >= parts
                else sorted(  # the empty chips come first
                    (c for c in range(len(load)) if used[c] + piece <= capacity_bytes),
                    key=lambda c: (load[c], used[c]),
                )
            )
            if empty + len(holding) >= parts or parts == chips:
                break
            parts += 1
        if empty + len(holding) < parts:
            raise DoesNotFit(
                f"table {i} ({sizes[i] / GB:.2f} GB) finds no room on the chips: {capacity_bytes / GB:.1f} GB each, "
                f"{sum(used) / GB:.1f} GB already placed"
            )
        taken = min(empty, parts)
        for c in [*range(len(load), len(load) + taken), *holding[: parts - taken]]:
            if c == len(load):
                load.append(0.0)
                used.append(0.0)
            owners[i][c] = 1.0 / parts
            load[c] += work[i] / parts
            used[c] += piece
    return tuple(owners)
