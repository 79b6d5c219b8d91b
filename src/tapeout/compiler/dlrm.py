"""A DLRM written in PyTorch from a catalog `RecsysConfig`, for the compiler: pooled
embedding-bag lookups (sum), a bottom MLP over the dense features, the interaction (pairwise dot
products, or DCN-v2 cross layers, low-rank when the config says so) and a top MLP, as
`workloads.dlrm` lowers them analytically. The tables of a production model hold billions of
rows, so the model is built on the meta device unless its weights are wanted.
"""

from __future__ import annotations

from typing import cast

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.errors import TapeoutError
from tapeout.workloads.recsys import RecsysConfig


def _mlp(first: int, widths: tuple[int, ...], last_relu: bool) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    prev = first
    for i, w in enumerate(widths):
        layers.append(torch.nn.Linear(prev, w))
        if last_relu or i < len(widths) - 1:
            layers.append(torch.nn.ReLU())
        prev = w
    return torch.nn.Sequential(*layers)


class Cross(torch.nn.Module):
    """One DCN-v2 cross layer: x0 * (W x + b) + x, W low-rank (V U) when `rank` is given."""

    def __init__(self, width: int, rank: int | None) -> None:
        super().__init__()
        self.down = torch.nn.Linear(width, rank, bias=False) if rank else None
        self.up = torch.nn.Linear(rank or width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.up(self.down(x) if self.down is not None else x)
        out: torch.Tensor = x0 * h + x
        return out


class DLRM(torch.nn.Module):
    """Called on (dense [batch, features], ids, offsets): per table, the ids of every sample's
    bag in one 1-D tensor and where each sample's bag starts; returns the click logit [batch, 1]."""

    def __init__(self, config: RecsysConfig) -> None:
        super().__init__()
        inter = config.interaction
        if inter.kind == "transformer":
            raise TapeoutError(
                "field 'model': the PyTorch DLRM builds dot and dcn interactions; a transformer over the "
                "user history is not built (pass MODULE:FACTORY)"
            )
        d = config.embedding_dim
        self.kind = inter.kind
        self.tables = torch.nn.ModuleList(torch.nn.EmbeddingBag(t.rows, d, mode="sum") for t in config.tables)
        self.bottom = (
            _mlp(max(1, config.dense_features), config.bottom_mlp, True) if config.bottom_mlp else None
        )
        width = config.interaction_width
        self.cross = torch.nn.ModuleList(Cross(width, inter.low_rank) for _ in range(inter.layers))
        self.top = _mlp(width, config.top_mlp, False)
        n = len(config.tables) + (1 if config.bottom_mlp else 0)
        pairs = [(i, j) for i in range(n) for j in range(i)]
        self.register_buffer("li", torch.tensor([i for i, _ in pairs], dtype=torch.long))
        self.register_buffer("lj", torch.tensor([j for _, j in pairs], dtype=torch.long))

    def forward(
        self, dense: torch.Tensor, ids: tuple[torch.Tensor, ...], offsets: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        pooled = [t(ids[i], offsets[i]) for i, t in enumerate(self.tables)]
        parts = ([self.bottom(dense)] if self.bottom is not None else []) + pooled
        z = torch.stack(parts, dim=1)  # [batch, vectors, dim]
        if self.kind == "dot":
            li, lj = cast(torch.Tensor, self.li), cast(torch.Tensor, self.lj)
            pairs = torch.bmm(z, z.transpose(1, 2))[:, li, lj]
            x = torch.cat([parts[0], pairs], dim=1)
        else:
            x0 = x = z.flatten(1)
            for layer in self.cross:
                x = layer(x0, x)
        return self.top(x)  # type: ignore[no-any-return]


def dlrm(config: RecsysConfig, *, meta: bool = True) -> DLRM:
    """The catalog config's DLRM with random weights (on the meta device by default)."""
    with torch.device("meta" if meta else "cpu"):
        model = DLRM(config)
    return model.train(False)


def dlrm_inputs(
    config: RecsysConfig, batch: int, *, meta: bool = True
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Example inputs for `batch` samples: each table's bags hold its mean pooling, rounded (at
    least one id)."""
    device = "meta" if meta else "cpu"
    dense = torch.empty((batch, max(1, config.dense_features)), device=device)
    bags = [max(round(t.pooling), 1) for t in config.tables]
    if meta:
        ids = tuple(torch.empty((batch * b,), dtype=torch.long, device=device) for b in bags)
    else:
        ids = tuple(torch.randint(0, t.rows, (batch * b,)) for t, b in zip(config.tables, bags, strict=True))
    offsets = tuple(torch.arange(0, batch * b, b, device=device) for b in bags)
    return dense, ids, offsets
