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
    precision: Precision = plan_field("int8", "Dense math.", case=False)
    embedding_precision: Precision | None = plan_field(
        None, "Embedding tables; default: the dense format (fp32 master rows in training).", case=False
    )

    def __post_init__(self) -> None:
        if self.sharding not in SHARDINGS:
            raise TapeoutError(f"field 'sharding': {self.sharding!r}; known: {', '.join(SHARDINGS)}")
        parse(self.precision, "precision", RECSYS)
        if self.embedding_precision is not None:
            parse(self.embedding_precision, "embedding_precision", RECSYS)

    def tables(self, *, training: bool) -> Precision:
        """The tables' format: as given, else fp32 master rows in training, else the dense format."""
        if self.embedding_precision is not None:
            return self.embedding_precision
        # imported here, not at the top: the CLI builds its flags from this plan at start-up
        from tapeout.workloads.dlrm import TRAINING_EMBEDDING_PRECISION

        return TRAINING_EMBEDDING_PRECISION if training else self.precision


@dataclass(frozen=True, slots=True)
class Placement:
    """Which chips hold which share of each table: `owners[t]` maps chip -> share of rows."""

    kind: Sharding
    owners: tuple[dict[int, float], ...]
    chips: int

    @property
    def replicated(self) -> bool:
        return self.kind == "data"

    def lookups_share(self, chip: int) -> list[float]:
        """Share of every table's lookups served by `chip`."""
        if self.replicated:
            return [1.0 / self.chips] * len(self.owners)
        return [o.get(chip, 0.0) for o in self.owners]

    def layout(self, chip: int, hot: tuple[float, ...]) -> Layout:
        """What `chip` runs of the whole system's graph: its 1/chips of the pairs, its share of each
        table, `hot[t]` of table t's lookups from on-chip SRAM, the pooled vectors exchanged among
        all chips unless every chip holds every table."""
        return Layout(dp=self.chips, tables=tuple(self.lookups_share(chip)), hot=hot,
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
        return Placement("data", tuple({c: 1.0 for c in range(chips)} for _ in sizes), chips)
    if total > capacity_bytes * chips:
        raise DoesNotFit(
            f"the tables take {total / GB:.1f} GB; {chips} chips hold {capacity_bytes * chips / GB:.1f} GB for "
            f"embeddings ({capacity_bytes / GB:.1f} GB each) in any sharding"
        )
    if sharding in ("row", "column"):
        return Placement(sharding, tuple({c: 1.0 / chips for c in range(chips)} for _ in sizes), chips)
    return Placement("table", _by_table(model, chips, capacity_bytes, sizes), chips)


def _by_table(model: RecsysConfig, chips: int, capacity_bytes: float, sizes: list[float]) -> tuple[dict[int, float], ...]:  # fmt: skip
    """Whole tables, heaviest lookup load first, onto the least loaded chip with room; a table
    heavier than a chip's fair share of the lookups, or bigger than any chip's room, is split by
    rows into enough equal shards (TorchRec's and HugeCTR's table-row-wise placement)."""
    work = [t.pooling * t.dim for t in model.tables]
    fair = sum(work) / chips
    load = [0.0] * chips
    used = [0.0] * chips
    owners: list[dict[int, float]] = [{} for _ in sizes]
    for i in sorted(range(len(sizes)), key=lambda i: -work[i]):
        parts = min(chips, max(1, round(work[i] / fair), math.ceil(sizes[i] / capacity_bytes)))
        while True:
            piece = sizes[i] / parts
            room = sorted(
                (c for c in range(chips) if used[c] + piece <= capacity_bytes),
                key=lambda c: (load[c], used[c]),
            )
            if len(room) >= parts or parts == chips:
                break
            parts += 1
        if len(room) < parts:
            raise DoesNotFit(
                f"table {i} ({sizes[i] / GB:.2f} GB) finds no room on the chips: {capacity_bytes / GB:.1f} GB each, "
                f"{sum(used) / GB:.1f} GB already placed"
            )
        for c in room[:parts]:
            owners[i][c] = 1.0 / parts
            load[c] += work[i] / parts
            used[c] += piece
    return tuple(owners)
