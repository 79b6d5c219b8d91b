"""The serving rate that meets latency limits: MLPerf's server scenario and the planner's capacity.

Both start from the steady-state model of continuous batching (`sim.capacity`, milliseconds),
which puts the rate within about -14 %/+10 % of a full simulated search, and simulate only to
confirm:
- `server` (validation's and the CLI's server scenario) finds the highest rate whose p99 TTFT
  and TPOT meet the limits in a simulation: steps from the model's rate that double from
  RESOLUTION until the outcome flips, then bisection to RESOLUTION. When the model is within
  1.25 % that takes two simulations, within 10 % seven; a bisection from zero took twelve;
- `checked_rate` (the planner) keeps the model's rate when one short run there meets the limits
  to within a tolerance, and bisects below it with such runs when it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import tapeout.checks as checks
from tapeout.errors import TapeoutError
from tapeout.sim.capacity import ServingModel
from tapeout.sim.llm import Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.scenarios import (
    SERVER_REQUESTS_PER_SLOT,
    ScenarioResult,
    auto_batch,
    mean_length,
    simulation_seconds,
)
from tapeout.sim.serve import ServeResult, simulate

RESOLUTION = 0.0125  # the server rate to 1.25 % (the first step from the model's rate)
STEPS = 10  # at most this many doublings of the step (a factor of about 13 either way)
CHECK_ITERATIONS = 6000  # the length of the planner's check run, in iterations (about)
CHECK_REQUESTS = (200, 2000)  # the check run's requests: at least, at most
CHECK_STEPS = 4  # bisection steps on the rate when a check fails: 1/16 of the [1/2, 1] bracket
SERVER_SIMULATIONS = 7  # what `server` takes when the model's rate is within 10 %, for its estimate


def simulated_p99(
    replica: Replica, input_len: Lengths | float, output_len: Lengths | float, rate: float, n: int, batch: int,
    warm_s: float = 0.0,
) -> tuple[float, float, ServeResult]:  # fmt: skip
    """p99 TTFT and TPOT of `n` Poisson requests simulated at `rate`, leaving out those that arrive
    in the first `warm_s` seconds (the run starts empty)."""
    reqs = Requests.poisson(n, rate, input_len, output_len)
    res = simulate(replica, reqs, max_batch=batch)
    steady = reqs.arrival_s >= min(warm_s, float(reqs.arrival_s[n // 2]))
    tpot = res.tpot_s[steady]
    ttft_p99 = float(np.percentile(res.ttft_s[steady], 99))
    finite = tpot[np.isfinite(tpot)]
    return ttft_p99, float(np.percentile(finite, 99)) if len(finite) else 0.0, res


def highest(ok: Callable[[float], bool], start: float, *, resolution: float, steps: int) -> float:
    """The highest x at which `ok` holds, for `ok` true below a threshold and false above it, to
    within `resolution` (relative): steps from `start` of 1 + resolution, 1 + 2 resolution,
    1 + 4 resolution... find the side the threshold is on and bracket it, then bisection narrows
    the bracket; 0 when `ok` fails down to `start / (1 + resolution * 2**steps)`.

    >>> round(highest(lambda x: x <= 7.0, 10.0, resolution=0.0125, steps=10), 3)
    6.994
    >>> round(highest(lambda x: x <= 10.1, 10.0, resolution=0.0125, steps=10), 3)
    10.0
    """
    up = ok(start)
    known, step = start, resolution
    for _ in range(steps):
        x = start * (1 + step) if up else start / (1 + step)
        if ok(x) != up:
            break
        known, step = x, 2 * step
    else:
        return known if up else 0.0
    lo, hi = (known, x) if up else (x, known)
    while hi > lo * (1 + resolution):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def server(
    replica: Replica,
    input_len: Lengths | float,
    output_len: Lengths | float,
    *,
    ttft_limit_s: float,
    tpot_limit_s: float,
    batch: int | None = None,
    replicas: int = 1,
    requests: int | None = None,
    max_seconds: float | None = None,
) -> ScenarioResult:
    """The highest Poisson rate (requests/s, whole system) whose p99 TTFT and TPOT meet the limits
    in a simulation of `requests` requests (six per sequence slot by default); a search estimated
    to take longer than `max_seconds` here is refused before it starts."""
    for name, value in (("ttft_limit_s", ttft_limit_s), ("tpot_limit_s", tpot_limit_s)):
        if not value > 0:
            raise TapeoutError(f"field '{name}': must be > 0 seconds, got {value}")
    ins, outs = mean_length(input_len), mean_length(output_len)
    batch = batch or auto_batch(replica, ins, outs)
    n = requests or max(256, SERVER_REQUESTS_PER_SLOT * batch)
    estimate = SERVER_SIMULATIONS * simulation_seconds(replica, n, ins, outs, batch)
    checks.work(f"a search of the server rate over {n:,} requests a step", estimate, max_seconds, None)
    seen: dict[float, ServeResult] = {}

    def ok(rate: float) -> bool:
        ttft, tpot, res = simulated_p99(replica, input_len, output_len, rate, n, batch)
        if ttft <= ttft_limit_s and tpot <= tpot_limit_s:
            seen[rate] = res
            return True
        return False

    model = ServingModel(replica, ins, max(2.0, outs), max_batch=batch)
    guess = model.capacity(ttft_limit_s=ttft_limit_s, tpot_limit_s=tpot_limit_s)
    if guess <= 0:  # the model finds no rate; start from what the replica decodes alone
        guess = batch / (model.decode_s(batch) * max(1.0, outs))
    rate = highest(ok, guess, resolution=RESOLUTION, steps=STEPS)
    if rate <= 0:
        raise TapeoutError(
            f"no request rate meets p99 TTFT <= {ttft_limit_s:g} s and p99 TPOT <= {tpot_limit_s:g} s "
            f"with batch {batch} (the lowest rate tried was {guess / (1 + RESOLUTION * 2**STEPS):.3g} requests/s "
            "per replica)"
        )
    s = seen[rate].summary()
    return ScenarioResult(
        scenario="server", batch=batch, result=seen[rate], tokens_per_s=rate * outs * replicas,
        ttft_s=s["ttft_s"]["mean"], tpot_s=s["tpot_s"]["mean"], rate_per_s=rate * replicas,
    )  # fmt: skip


def checked_rate(
    replica: Replica, model: ServingModel, input_len: float, output_len: float, *, ttft_limit_s: float,
    tpot_limit_s: float, rate: float, tolerance: float,
) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """The model's `rate` if a short simulated run there meets the limits to within `tolerance`;
    else a bisection with such runs (limits exact) below it, halving the lower end while it
    fails, up to four times (0 when nothing meets the limits). Returns the rate and what the
    accepted run saw."""
    load = model.load(rate)
    iteration_s = load.iteration_s if load else tpot_limit_s
    warm_s = iteration_s * model.decodes + (load.prefill_s if load else ttft_limit_s)  # a request's life

    def run(r: float, slack: float = 0.0) -> dict[str, Any] | None:
        n = int(np.clip(r * (CHECK_ITERATIONS * iteration_s + warm_s), *CHECK_REQUESTS))
        ttft, tpot, _ = simulated_p99(replica, input_len, output_len, r, n, model.max_batch, warm_s)
        good = ttft <= ttft_limit_s * (1 + slack) and tpot <= tpot_limit_s * (1 + slack)
        return {"simulated_p99_ttft_s": ttft, "simulated_p99_tpot_s": tpot} if good else None

    if rate <= 0:
        return 0.0, {}
    seen = run(rate, tolerance)
    if seen is not None:
        return rate, {"capacity_from": "model, checked by simulation", **seen}
    hi, lo = rate, rate / 2
    for _ in range(4):
        if (seen := run(lo)) is not None:
            break
        hi, lo = lo, lo / 2
    else:
        return 0.0, {}
    for _ in range(CHECK_STEPS):
        mid = (lo + hi) / 2
        if (got := run(mid)) is not None:
            lo, seen = mid, got
        else:
            hi = mid
    return lo, {"capacity_from": "simulation (the model's rate failed its check)", **seen}
