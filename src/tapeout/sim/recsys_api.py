"""`recsys`: one call from a recommendation model and a chip to inference or training figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import resolve_chip
from tapeout.hardware.spec import Precision
from tapeout.perf.system import System
from tapeout.sim import recsys as sim
from tapeout.workloads.models import resolve_model
from tapeout.workloads.recsys import RecsysConfig

RECSYS_PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16", "fp8", "int8", "fp4")


def _precision(field: str, value: str) -> Precision:
    for p in RECSYS_PRECISIONS:
        if p == value:
            return p
    raise TapeoutError(f"field '{field}': unknown precision {value!r}; known: {', '.join(RECSYS_PRECISIONS)}")


def _sharding(value: str) -> sim.Sharding:
    for s in sim.SHARDINGS:
        if s == value:
            return s
    raise TapeoutError(f"field 'sharding': {value!r}; known: {', '.join(sim.SHARDINGS)}")


def recsys(
    model: str | Mapping[str, Any] | RecsysConfig,
    hardware: str | Mapping[str, Any],
    chips: int = 1,
    *,
    batch: int | None = None,
    pairs_per_sample: float = 1.0,
    latency_limit_s: float | None = None,
    sharding: str = "auto",
    precision: str = "int8",
    embedding_precision: str | None = None,
    training: bool = False,
) -> dict[str, Any]:
    """Inference throughput at a batch, the highest QPS within a p99 limit, or a training step.

    >>> out = recsys("dlrm-v2", "h100-sxm", 8, pairs_per_sample=270)
    >>> out["sharding"], out["samples_per_s"] > 1e5
    ('data', True)
    """
    config = model if isinstance(model, RecsysConfig) else resolve_model(model, "recsys", None)
    if not isinstance(config, RecsysConfig):
        raise TapeoutError("field 'model': a recommendation model is needed, not a language model")
    chip = resolve_chip(hardware if isinstance(hardware, str) else dict(hardware), "recsys", None)
    rs = sim.RecsysSystem.of(
        config, System.of(chip, chips), precision=_precision("precision", precision),
        embedding_precision=_precision("embedding_precision", embedding_precision) if embedding_precision else None,
        sharding=_sharding(sharding), training=training,
    )  # fmt: skip
    head = {"model": model if isinstance(model, str) else "inline", "hardware": chip.id, "chips": chips}
    if training:
        if batch is None:
            raise TapeoutError("field 'batch': training needs the global batch (samples per step)")
        return {**head, "mode": "training", **sim.train_step(rs, batch).as_dict()}
    pairs = round(batch * pairs_per_sample) if batch else None
    if latency_limit_s is not None:
        result = sim.server(
            rs, latency_limit_s=latency_limit_s, pairs_per_sample=pairs_per_sample, batch_pairs=pairs
        )
        return {**head, "mode": "server", **result.as_dict()}
    return {
        **head,
        "mode": "offline",
        **sim.offline(rs, pairs_per_sample=pairs_per_sample, batch_pairs=pairs).as_dict(),
    }
