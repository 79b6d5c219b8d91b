"""The highest rate of recommendation samples whose p99 latency meets a limit: a bisection on the
rate with the batching simulation of `sim.recsys`, from zero to the offline throughput at the
largest batch (no rate above it is sustainable: a batch's cost grows with its size)."""

from __future__ import annotations

import math

from tapeout.errors import TapeoutError
from tapeout.sim import recsys
from tapeout.sim.recsys import p99_latency

RATE_STEPS = 14  # bisection steps: the rate to 1/16384 of the offline throughput


def server(
    rs: recsys.RecsysSystem, *, latency_limit_s: float, pairs_per_sample: float = 1.0, batch_pairs: int | None = None,
    samples: int = 20000,
) -> recsys.RecsysInferenceResult:  # fmt: skip
    """The highest Poisson rate of samples whose p99 latency meets the limit, with each chip
    batching the samples that have queued (up to `batch_pairs` pairs)."""
    if not latency_limit_s > 0:
        raise TapeoutError(f"field 'latency_limit_s': must be > 0 seconds, got {latency_limit_s}")
    top = recsys.offline(rs, pairs_per_sample=pairs_per_sample, batch_pairs=batch_pairs)
    max_pairs = top.batch_pairs
    if rs.batch_time(max(1, round(pairs_per_sample))) > latency_limit_s:
        raise TapeoutError(
            f"one sample of {pairs_per_sample:g} pairs takes longer than the {latency_limit_s:g} s latency limit"
        )
    chips = rs.system.chips
    lo, hi = 0.0, top.samples_per_s / chips
    for _ in range(RATE_STEPS):
        mid = (lo + hi) / 2
        if p99_latency(rs, mid, pairs_per_sample, max_pairs, samples, 0) <= latency_limit_s:
            lo = mid
        else:
            hi = mid
    p99 = p99_latency(rs, lo, pairs_per_sample, max_pairs, samples, 0) if lo > 0 else math.inf
    return recsys.RecsysInferenceResult(
        samples_per_s=lo * chips, pairs_per_s=lo * chips * pairs_per_sample, batch_pairs=max_pairs,
        batch_time_s=top.batch_time_s, p99_latency_s=p99, bound=top.bound, sharding=rs.placement.kind,
    )  # fmt: skip
