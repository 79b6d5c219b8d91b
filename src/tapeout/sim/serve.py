"""The serving simulator: an event loop over engines, a scheduling policy, and the metrics.

An engine is one model replica with a clock. The policy picks the engine that acts next,
gives it a batch (or lets it wait), and books what the iteration produced; the loop only
advances clocks. Policies live in `tapeout.sim.policies`, one file each, registered in
`POLICIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.sim.llm import Replica
from tapeout.sim.policies import POLICIES
from tapeout.sim.policies.base import Engine, Ledger, Policy
from tapeout.sim.requests import FloatArray, IntArray, Requests

# What one iteration costs to simulate, scheduling included, on the 2-core development machine
# (bench_serve: 0.7 s for 29,605 iterations, rounded up): for refusing a run that would exceed its
# time budget before it starts.
SECONDS_PER_ITERATION = 30e-6


def run(policy: Policy, progress: Callable[[int], None] | None = None) -> None:
    """The event loop."""
    while (engine := policy.next_engine()) is not None:
        batch = policy.schedule(engine)
        if batch is None:
            continue
        dt = engine.replica.step_time(batch)
        engine.clock += dt
        engine.iterations += 1
        policy.complete(engine, batch)
        if progress is not None:
            progress(engine.iterations)


def _percentiles(values: FloatArray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeResult:
    """Per-request latencies and the summary of one simulation (one replica's traffic,
    scaled to `replicas` identical replicas for throughput)."""

    requests: int
    replicas: int
    duration_s: float
    output_tokens: int
    input_tokens: int
    output_len: IntArray
    ttft_s: FloatArray
    tpot_s: FloatArray
    e2e_s: FloatArray
    preemptions: int
    iterations: int
    ttft_limit_s: float | None = None
    tpot_limit_s: float | None = None

    @classmethod
    def of(cls, ledger: Ledger, engines: list[Engine], replicas: int, **limits: float | None) -> ServeResult:
        req = ledger.requests
        ttft = ledger.first_token_s - req.arrival_s
        e2e = ledger.finish_s - req.arrival_s
        decode_tokens = np.maximum(req.output_len - 1, 1)
        tpot = np.where(req.output_len > 1, (ledger.finish_s - ledger.first_token_s) / decode_tokens, np.nan)
        start = float(req.arrival_s.min())
        return cls(
            requests=len(req),
            replicas=replicas,
            duration_s=float(np.nanmax(ledger.finish_s)) - start,
            output_tokens=int(req.output_len.sum()),
            input_tokens=int(req.input_len.sum()),
            output_len=req.output_len,
            ttft_s=ttft,
            tpot_s=tpot,
            e2e_s=e2e,
            preemptions=ledger.preemptions,
            iterations=sum(e.iterations for e in engines),
            **limits,
        )

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of all replicas."""
        return self.replicas * self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.replicas * self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def meets(self) -> FloatArray:
        """Per request: 1.0 where its TTFT and TPOT meet the limits, else 0.0."""
        ok = np.ones(self.requests, dtype=bool)
        if self.ttft_limit_s is not None:
            ok &= self.ttft_s <= self.ttft_limit_s
        if self.tpot_limit_s is not None:
            ok &= ~(self.tpot_s > self.tpot_limit_s)
        return ok.astype(np.float64)

    @property
    def goodput_tokens_per_s(self) -> float:
        """Output tokens per second of the requests that met both limits."""
        if self.duration_s <= 0:
            return 0.0
        return self.replicas * float((self.meets() * self.output_len).sum()) / self.duration_s

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "replicas": self.replicas,
            "duration_s": self.duration_s,
            "tokens_per_s": self.tokens_per_s,
            "requests_per_s": self.requests_per_s,
            "goodput_tokens_per_s": self.goodput_tokens_per_s,
            "ttft_s": _percentiles(self.ttft_s),
            "tpot_s": _percentiles(self.tpot_s),
            "e2e_s": _percentiles(self.e2e_s),
            "preemptions": self.preemptions,
            "iterations": self.iterations,
        }


def simulate(
    replica: Replica,
    requests: Requests,
    *,
    policy: str = "continuous",
    replicas: int = 1,
    ttft_limit_s: float | None = None,
    tpot_limit_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> ServeResult:
    """Serve `requests` on one replica (`replicas` identical ones each get such a stream).

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.perf.system import System
    >>> from tapeout.workloads.models import get_model
    >>> r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")))
    >>> res = simulate(r, Requests.offline(64, 128, 32))
    >>> res.output_tokens, res.summary()["ttft_s"]["p50"] > 0
    (2048, True)
    """
    factory = POLICIES.get(policy)
    if factory is None:
        raise TapeoutError(f"unknown scheduling policy {policy!r}; known: {', '.join(sorted(POLICIES))}")
    ledger = Ledger(requests)
    sched = factory(replica, ledger, **options)
    run(sched, progress)
    if np.isnan(ledger.finish_s).any():
        raise AssertionError("the simulation ended with unfinished requests")
    return ServeResult.of(
        ledger, sched.engines, replicas, ttft_limit_s=ttft_limit_s, tpot_limit_s=tpot_limit_s
    )
