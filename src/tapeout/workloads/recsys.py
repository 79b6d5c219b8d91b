"""Recommendation models of the DLRM family: embedding tables with pooled multi-hot lookups,
a bottom MLP over dense features, an interaction (dot products, DCN-v2 cross layers, or a
transformer over the user's history as in HSTU-style models) and a top MLP."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tapeout.checks import MAX_COUNT, MAX_LAYERS, MAX_TOKENS
from tapeout.frozen import Frozen

PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]


class EmbeddingTable(Frozen):
    name: str | None = None
    rows: PosInt
    dim: PosInt
    pooling: Annotated[float, Field(gt=0, le=MAX_COUNT)] = 1.0  # mean lookups per sample (multi-hot size)
    # Zipf exponent of the row-id distribution (0 = uniform); real click logs sit near 1.
    skew_alpha: Annotated[float, Field(ge=0.0, le=3.0)] = 0.0


class Interaction(Frozen):
    kind: Literal["dot", "dcn", "transformer"]
    layers: Annotated[int, Field(ge=0, le=MAX_LAYERS)] = 0
    low_rank: PosInt | None = None  # DCN-v2 low-rank cross layers
    heads: PosInt | None = None  # transformer over the user history
    history_len: Annotated[int, Field(gt=0, le=MAX_TOKENS)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Interaction:
        if self.kind == "dcn" and self.layers < 1:
            raise ValueError("a dcn interaction needs layers >= 1")
        if self.kind == "transformer" and (self.layers < 1 or self.heads is None or self.history_len is None):
            raise ValueError("a transformer interaction needs layers, heads and history_len")
        return self


class Evaluation(Frozen):
    """The training protocol's periodic evaluation: `samples` held-out samples scored (forward
    only) after every `every_samples` training samples. Wall-clock training throughputs, such as
    MLPerf's, include it."""

    every_samples: PosInt
    samples: PosInt


class RecsysConfig(Frozen):
    architecture: Literal["dlrm"] = "dlrm"
    dense_features: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    tables: tuple[EmbeddingTable, ...] = Field(min_length=1)
    bottom_mlp: tuple[PosInt, ...]
    interaction: Interaction
    top_mlp: tuple[PosInt, ...] = Field(min_length=1)
    evaluation: Evaluation | None = None

    @model_validator(mode="after")
    def _check(self) -> RecsysConfig:
        dims = {t.dim for t in self.tables}
        if self.interaction.kind in ("dot", "dcn") and len(dims) != 1:
            raise ValueError(
                f"{self.interaction.kind} interaction needs one embedding dim, got {sorted(dims)}"
            )
        if self.bottom_mlp and self.bottom_mlp[-1] not in dims and self.interaction.kind != "transformer":
            raise ValueError(
                f"bottom_mlp must end at the embedding dim {sorted(dims)}, ends at {self.bottom_mlp[-1]}"
            )
        return self

    @property
    def embedding_dim(self) -> int:
        return self.tables[0].dim

    @property
    def interaction_width(self) -> int:
        """Width of the vector the top MLP reads."""
        d, n = self.embedding_dim, len(self.tables) + (1 if self.bottom_mlp else 0)
        if self.interaction.kind == "dot":
            return d + n * (n - 1) // 2
        return n * d

    @staticmethod
    def _mlp_params(widths: tuple[int, ...], first: int) -> int:
        total, prev = 0, first
        for w in widths:
            total += prev * w + w
            prev = w
        return total

    def embedding_params(self) -> int:
        return sum(t.rows * t.dim for t in self.tables)

    def dense_params(self) -> int:
        bottom = self._mlp_params(self.bottom_mlp, self.dense_features)
        width = self.interaction_width
        inter = 0
        if self.interaction.kind == "dcn":
            r = self.interaction.low_rank
            per = (2 * width * r if r else width * width) + width
            inter = self.interaction.layers * per
        elif self.interaction.kind == "transformer":
            d = self.embedding_dim
            inter = self.interaction.layers * (4 * d * d + 8 * d * d + 4 * d)
        return bottom + inter + self._mlp_params(self.top_mlp, width)

    def param_count(self) -> int:
        """Embedding plus dense parameters.

        >>> t = EmbeddingTable(rows=1000, dim=16)
        >>> RecsysConfig(dense_features=4, tables=(t, t), bottom_mlp=(16,),
        ...              interaction=Interaction(kind="dot"), top_mlp=(1,)).param_count()
        32100
        """
        return self.embedding_params() + self.dense_params()

    @property
    def lookups_per_sample(self) -> float:
        return sum(t.pooling for t in self.tables)
