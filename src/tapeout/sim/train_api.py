"""`train`: one call from a model, a chip and a plan (or a plan search) to a training step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import resolve_chip
from tapeout.hardware.spec import Precision
from tapeout.parallel.training import ATTENTION_KERNELS, RECOMPUTE, TrainingPlan
from tapeout.perf.system import System
from tapeout.sim.train import train_step
from tapeout.sim.train_search import search as search_plans
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model

TRAINING_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "fp32")


def train(
    model: str | Mapping[str, Any] | LLMConfig,
    hardware: str | Mapping[str, Any],
    chips: int,
    *,
    seq_len: int,
    global_batch: int,
    tp: int | None = None,
    pp: int | None = None,
    dp: int | None = None,
    cp: int | None = None,
    ep: int | None = None,
    vpp: int | None = None,
    micro_batch: int | None = None,
    sequence_parallel: bool | None = None,
    tp_overlap: bool = False,
    ep_overlap: bool = False,
    attention: str = "flash",
    recompute: str | None = None,
    zero: int | None = None,
    zero_shard: int | None = None,
    precision: str = "bf16",
    search: bool = False,
    budget: int = 200_000,
    chips_per_node: int | None = None,
) -> dict[str, Any]:
    """Predict one training step with the plan given, or with the fastest plan that fits.

    Plan fields left at None take the plan's defaults (tp 1, no ZeRO, ...); with `search` the
    fields given are pinned and the search picks the rest.

    >>> out = train("llama-3.1-8b", "h100-sxm", 8, seq_len=4096, global_batch=64, zero=1, recompute="selective")
    >>> sorted(out["breakdown_s"]) == ["compute", "exposed_communication", "optimizer", "pipeline_bubble"]
    True
    """
    config = model if isinstance(model, LLMConfig) else resolve_model(model, "train", None)
    if not isinstance(config, LLMConfig):
        raise TapeoutError("field 'model': training steps need a language model, not a recommendation model")
    if precision not in TRAINING_PRECISIONS:
        raise TapeoutError(f"field 'precision': {precision!r}; known: {', '.join(TRAINING_PRECISIONS)}")
    rc = next((r for r in RECOMPUTE if r == (recompute or "none")), None)
    if rc is None:
        raise TapeoutError(f"field 'recompute': {recompute!r}; known: {', '.join(RECOMPUTE)}")
    given = {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "ep": ep, "vpp": vpp, "micro_batch": micro_batch,
             "sequence_parallel": sequence_parallel, "recompute": recompute and rc, "zero": zero,
             "zero_shard": zero_shard}  # fmt: skip
    fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    kernel = next((k for k in ATTENTION_KERNELS if k == attention), None)
    if kernel is None:
        raise TapeoutError(f"field 'attention': {attention!r}; known: {', '.join(ATTENTION_KERNELS)}")
    chip = resolve_chip(hardware if isinstance(hardware, str) else dict(hardware), "train", None)
    system = System.of(chip, chips, chips_per_node=chips_per_node)
    prec = cast(Precision, precision)
    extra: dict[str, Any] = {}
    if search:
        found = search_plans(
            config, system, seq_len=seq_len, global_batch=global_batch, precision=prec, budget=budget,
            tp_overlap=tp_overlap, ep_overlap=ep_overlap, attention=kernel, fixed=fields,
        )  # fmt: skip
        result = found.best
        extra["search"] = {"tried": found.tried, "feasible": found.feasible, "exhausted": found.exhausted,
                           "failures": found.failures}  # fmt: skip
    else:
        plan = TrainingPlan(tp_overlap=tp_overlap, ep_overlap=ep_overlap, attention=kernel, precision=prec,
                            **fields)  # fmt: skip
        result = train_step(config, system, plan, seq_len=seq_len, global_batch=global_batch)
    return {
        "model": model if isinstance(model, str) else "inline",
        "hardware": chip.id,
        "chips": chips,
        **result.as_dict(),
        **extra,
    }
