"""`serve`: one call from a model, a chip and a plan to throughput, latency and memory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import resolve_chip
from tapeout.hardware.spec import Precision
from tapeout.parallel.inference import SERVING_PRECISIONS, InferencePlan
from tapeout.perf.system import System
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.serve import ServeResult, simulate
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model


def _precision(field: str, value: str) -> Precision:
    if value not in SERVING_PRECISIONS:
        raise TapeoutError(
            f"field '{field}': unknown precision {value!r}; known: {', '.join(SERVING_PRECISIONS)}"
        )
    return cast(Precision, value)


def build_replica(
    model: str | Mapping[str, Any] | LLMConfig,
    hardware: str | Mapping[str, Any],
    chips: int,
    *,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    precision: str = "bf16",
    act_precision: str | None = None,
    kv_precision: str | None = None,
    max_tokens: int = 8192,
) -> tuple[Replica, int]:
    """A replica of `model` on `hardware` and how many of them `chips` hold."""
    config = model if isinstance(model, LLMConfig) else resolve_model(model, "serve", None)
    if not isinstance(config, LLMConfig):
        raise TapeoutError("field 'model': serving needs a language model, not a recommendation model")
    chip = resolve_chip(hardware if isinstance(hardware, str) else dict(hardware), "serve", None)
    plan = InferencePlan(
        tp=tp, pp=pp, ep=ep, weight_precision=_precision("precision", precision),
        act_precision=_precision("act_precision", act_precision or precision),
        kv_precision=_precision("kv_precision", kv_precision or precision),
    )  # fmt: skip
    replicas = plan.replicas(config, chips, chip.id)
    return Replica.of(config, System.of(chip, plan.chips), plan, max_tokens=max_tokens), replicas


def phase_report(replica: Replica, input_len: float, decode_batch: int, context: float) -> dict[str, Any]:
    """Latency and limiter of a typical prefill and a typical decode iteration."""
    prompt = max(1, round(input_len))
    chunk = min(prompt, replica.max_tokens)
    prefill = replica.step(Batch(prefill_tokens=chunk, prefill_seqs=1, prefill_context=chunk))
    decode = replica.step(
        Batch(decode_seqs=max(1, decode_batch), decode_context=round(max(1, decode_batch) * context))
    )
    return {
        "prefill": {"tokens": chunk, "time_s": prefill.time_s, "bound": prefill.bound},
        "decode": {"sequences": max(1, decode_batch), "time_s": decode.time_s, "bound": decode.bound},
    }


def serve(
    model: str | Mapping[str, Any] | LLMConfig,
    hardware: str | Mapping[str, Any],
    chips: int = 1,
    *,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    precision: str = "bf16",
    kv_precision: str | None = None,
    input_len: Lengths | float = 512,
    output_len: Lengths | float = 256,
    rate: float | None = None,
    trace: str | Path | None = None,
    requests: int = 1000,
    max_batch: int | None = None,
    max_tokens: int = 8192,
    policy: str = "continuous",
    ttft_limit_s: float | None = None,
    tpot_limit_s: float | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Serve a request stream on `chips` chips and report what happened.

    Requests come from `trace` (JSONL or CSV), else a Poisson stream at `rate` requests/s for the
    whole system, else all at once (offline). Every replica gets an equal share of the stream.

    >>> out = serve("llama-2-7b", "h100-sxm", requests=64, input_len=128, output_len=32)
    >>> out["requests"], out["memory_per_chip"]["weights_gb"] > 13
    (64, True)
    """
    if rate is not None and trace is not None:
        raise TapeoutError("give either a request rate or a trace file, not both")
    for name, value in (("input_len", input_len), ("output_len", output_len)):
        if not isinstance(value, Lengths) and not value >= 1:
            raise TapeoutError(f"field '{name}': must be >= 1 token, got {value}")
    replica, replicas = build_replica(
        model, hardware, chips, tp=tp, pp=pp, ep=ep, precision=precision,
        kv_precision=kv_precision, max_tokens=max_tokens,
    )  # fmt: skip
    if trace is not None:
        reqs = Requests.from_trace(trace)
        if replicas > 1:  # round-robin: replica 0 serves every replicas-th request
            reqs = Requests(
                reqs.arrival_s[::replicas], reqs.input_len[::replicas], reqs.output_len[::replicas]
            )
    elif rate is not None:
        if not rate > 0:
            raise TapeoutError(f"field 'rate': must be > 0 requests/s, got {rate}")
        reqs = Requests.poisson(requests, rate / replicas, input_len, output_len, seed=seed)
    else:
        reqs = Requests.offline(requests, input_len, output_len, seed=seed)
    result: ServeResult = simulate(
        replica, reqs, policy=policy, replicas=replicas, max_batch=max_batch, max_tokens=max_tokens,
        ttft_limit_s=ttft_limit_s, tpot_limit_s=tpot_limit_s, progress=progress,
    )  # fmt: skip
    summary = result.summary()
    mean_in = float(reqs.input_len.mean())
    mean_out = float(reqs.output_len.mean())
    decode_batch = round(float((reqs.output_len - 1).sum()) / max(1, result.iterations))
    plan = replica.plan
    return {
        "model": model if isinstance(model, str) else "inline",
        "hardware": replica.system.chip.id,
        "chips": chips,
        "plan": {
            "tp": plan.tp,
            "pp": plan.pp,
            "ep": plan.ep,
            "replicas": replicas,
            "precision": plan.weight_precision,
            "kv_precision": plan.kv_precision,
        },
        "policy": policy,
        **summary,
        "memory_per_chip": replica.memory.as_dict(),
        "phases": phase_report(replica, mean_in, decode_batch, mean_in + mean_out / 2),
    }
