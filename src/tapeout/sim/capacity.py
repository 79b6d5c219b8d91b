"""Serving capacity without a simulation: a steady-state model of continuous batching.

The replica runs the iterations of `policies.continuous` (every decoding sequence advances one
token; prompts are prefilled first come, first served, within the token budget of an
iteration) and each iteration costs the replica's own `step_time`. At a Poisson rate of `rate`
requests/s:

- **Mean state.** An iteration of mean length t decodes n = rate x (out - 1) x t sequences
  (Little's law; a request decodes for out - 1 iterations) at the mean context (prompt plus
  half the output) and prefills rate x t prompts, each adding p(n) = step(n decodes + the
  prompt) - step(n decodes) (summed over its chunks). So t = d(n) / (1 - rate x p(n)), with
  d(n) the decode step, found as the least fixed point from t = d(1).
- **TPOT.** A request's TPOT is its decode lifetime over its out - 1 iterations. The lifetime
  is a busy period: it starts with the work of its own decode iterations at the batch it finds,
  and every prompt prefilled meanwhile adds a jump s = p + a (out - 1) / 2 (the prefill, and on
  average half the request's iterations with one more sequence; a = d'(n)). With a fixed jump
  the lifetime is w + k s with probability w / (w + k s) x Poisson(k; rate (w + k s))
  (Takacs' lemma on the first passage of a compound Poisson process: L. Takacs,
  "Combinatorial Methods in the Theory of Stochastic Processes", 1967, ch. 3). The prompts that
  arrived during its own prefill iteration are prefilled first (a Poisson number of jumps
  added to w); the batch it starts with and where each arrival falls add a normal spread.
- **TTFT.** The prompts waiting at the start of an iteration form a Markov chain (an iteration
  prefills up to its token budget first come, first served, and lasts d + its prefill; the
  prompts that arrive meanwhile join the queue); a request arrives during an iteration drawn
  by its length, waits for it, for the prompts ahead of it and for its own, and shares its last
  iteration with the prompts that fit behind it. With more requests in flight than the
  sequence limit `max_batch` it also queues for a slot (Erlang C: M/M/c with the time a
  request holds its slot as the service).

The percentiles are over all requests; `capacity` is the highest rate whose `quantile` TTFT
and TPOT meet the limits, by bisection (both grow with the rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import FloatArray

RATE_STEPS = 20  # bisection steps on the rate: to 1e-6 of the bracket
PREFILL_UNITS = 4  # the TTFT chain counts prompts in pieces of at most 1/4 of the token budget
GRID_EXACT = 16  # batch sizes whose step time is computed exactly; above, a grid
GRID_PER_DOUBLING = 8
CHAIN_UNITS = 1024  # the longest queue the TTFT chain holds, in those pieces
_erf = np.frompyfunc(math.erf, 1, 1)


def _normal_cdf(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.asarray(_erf(z / math.sqrt(2.0)), dtype=np.float64))
    return out


def _poisson(mean: float | FloatArray, k: FloatArray) -> FloatArray:
    """Poisson probabilities of the counts `k` (one mean, or one per count)."""
    mean = np.asarray(mean, dtype=np.float64)
    log_factorial = np.cumsum(np.log(np.maximum(1.0, np.arange(float(k.max()) + 1))))[k.astype(np.int64)]
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(k == 0, np.exp(-mean), np.exp(k * np.log(mean) - mean - log_factorial))
    return out


def _counts(mean: float) -> FloatArray:
    """The Poisson counts that matter at `mean` (all but about 1e-7 of the probability)."""
    return np.arange(0.0, math.ceil(mean + 6 * math.sqrt(mean) + 6))


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """The mean state at one rate (times in seconds): iteration time, decode batch, the decode
    step at that batch, the prefill of one prompt and its chunks, and the decode step's growth
    per sequence."""

    rate_per_s: float
    iteration_s: float
    decode_batch: float
    decode_s: float
    prefill_s: float
    chunks: int
    slope_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Queue:
    """Prompts waiting for prefill at the start of an iteration, in units (pieces of a prompt):
    the values `units` and their probabilities. An iteration prefills up to `per_iteration`
    units and lasts the decode step plus `unit_s` per unit."""

    decode_s: float
    unit_s: float
    per_prompt: int
    per_iteration: int
    units: FloatArray = field(default_factory=lambda: np.zeros(0))
    probs: FloatArray = field(default_factory=lambda: np.zeros(0))

    def length(self, units: FloatArray) -> FloatArray:
        """Seconds of the iterations that start with `units` waiting."""
        out: FloatArray = self.decode_s + np.minimum(units, self.per_iteration) * self.unit_s
        return out

    @property
    def full_s(self) -> float:
        """Seconds of an iteration that prefills all it may."""
        return self.decode_s + self.per_iteration * self.unit_s


class ServingModel:
    """The steady state of one replica serving `input_len`-token prompts and `output_len`-token
    answers with at most `max_batch` sequences in flight. Step times are cached per batch size:
    they depend on the batch and the lengths, not on the rate.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.perf.system import System
    >>> from tapeout.workloads.models import get_model
    >>> r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")))
    >>> m = ServingModel(r, 512, 128, max_batch=512)
    >>> rate = m.capacity(ttft_limit_s=1.0, tpot_limit_s=0.02)
    >>> round(m.tpot_quantile(rate), 3), m.ttft_quantile(rate) < 1.0
    (0.02, True)
    """

    def __init__(
        self, replica: Replica, input_len: float, output_len: float, *, max_batch: int, quantile: float = 0.99
    ) -> None:
        if not output_len >= 2:
            raise TapeoutError(f"field 'output_len': the model needs >= 2 tokens (a TPOT), got {output_len}")
        if not input_len >= 1:
            raise TapeoutError(f"field 'input_len': must be >= 1 token, got {input_len}")
        self.replica = replica
        self.input_len = input_len
        self.decodes = output_len - 1  # decode iterations of one request: the TPOT's denominator
        self.context = input_len + output_len / 2  # the mean context of a decoding sequence
        self.max_batch = max_batch
        self.quantile = quantile
        self._decode: dict[int, float] = {}
        self._prefill: dict[int, tuple[float, int]] = {}
        self._loads: dict[float, Load | None] = {}
        self._queues: dict[float, _Queue | None] = {}

    # ---- step costs ------------------------------------------------------------------------
    # Step times are smooth in the batch size: they are taken at every size up to GRID_EXACT
    # and on a geometric grid (GRID_PER_DOUBLING points per doubling) above, linear between.
    @staticmethod
    def _grid(n: float) -> tuple[int, int, float]:
        """The grid points around `n` (>= 1) and the weight of the upper one."""
        if n < GRID_EXACT:
            k = int(n)
            return k, k + 1, n - k
        i = math.floor(math.log2(n / GRID_EXACT) * GRID_PER_DOUBLING)
        lo, hi = (round(GRID_EXACT * 2 ** (x / GRID_PER_DOUBLING)) for x in (i, i + 1))
        return lo, hi, (n - lo) / (hi - lo)

    def _decode_at(self, n: int) -> float:
        t = self._decode.get(n)
        if t is None:
            t = self.replica.step_time(Batch(decode_seqs=n, decode_context=round(n * self.context)))
            self._decode[n] = t
        return t

    def decode_s(self, n: float) -> float:
        """One decode step of `n` sequences."""
        lo, hi, w = self._grid(max(1.0, n))
        return self._decode_at(lo) + w * (self._decode_at(hi) - self._decode_at(lo))

    def _prefill_at(self, n: int) -> tuple[float, int]:
        cached = self._prefill.get(n)
        if cached is None:
            room = self.replica.max_tokens - n
            prompt = max(1, round(self.input_len))
            total, done, chunks = 0.0, 0, 0
            while room >= 1 and done < prompt:
                chunk = min(prompt - done, room)
                done += chunk
                chunks += 1
                batch = Batch(decode_seqs=n, decode_context=round(n * self.context), prefill_tokens=chunk,
                              prefill_seqs=1, prefill_context=done)  # fmt: skip
                total += self.replica.step_time(batch) - self._decode_at(n)
            cached = self._prefill[n] = (total, chunks) if room >= 1 else (math.inf, 0)
        return cached

    def prefill(self, n: float) -> tuple[float, int]:
        """The time one prompt adds to the iterations of `n` decoding sequences, and its chunks."""
        lo, hi, w = self._grid(max(1.0, n))
        (p_lo, chunks), (p_hi, _) = self._prefill_at(lo), self._prefill_at(hi)
        return p_lo + w * (p_hi - p_lo), chunks

    # ---- the mean state --------------------------------------------------------------------
    def load(self, rate: float) -> Load | None:
        """The mean state at `rate` requests/s; None when the replica cannot keep up."""
        if rate not in self._loads:
            self._loads[rate] = self._load(rate)
        return self._loads[rate]

    def _load(self, rate: float) -> Load | None:
        def step(t: float) -> float:  # the mean iteration at which a mean iteration of t arrives
            n = max(1.0, rate * self.decodes * t)
            p, _ = self.prefill(n)
            return math.inf if rate * p >= 1.0 or n > self.max_batch else self.decode_s(n) / (1.0 - rate * p)

        # `step` grows with t: iterating from below climbs to its least fixed point; when that
        # is slow (a steep stretch of the step cost), bisect between the last iterate and a
        # point past the fixed point.
        lo = self.decode_s(1.0)
        for _ in range(50):
            nxt = step(lo)
            if nxt == math.inf:
                return None
            if nxt - lo <= 1e-9 * nxt:
                t = nxt
                break
            lo = nxt
        else:
            hi = 2 * lo
            while hi < step(hi) < math.inf:
                hi *= 2
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if step(mid) > mid else (lo, mid)
            if step(hi) == math.inf:
                return None
            t = hi
        n = max(1.0, rate * self.decodes * t)
        lo, hi = max(1.0, n - 1.0), n + 1.0
        p, chunks = self.prefill(n)
        return Load(rate_per_s=rate, iteration_s=t, decode_batch=n, decode_s=self.decode_s(n), prefill_s=p,
                    chunks=chunks, slope_s=(self.decode_s(hi) - self.decode_s(lo)) / (hi - lo))  # fmt: skip

    # ---- TPOT ------------------------------------------------------------------------------
    def _lifetimes(self, load: Load) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        """A request's decode lifetime: its values, their probabilities and spreads (seconds)."""
        lam, m = load.rate_per_s, self.decodes
        one_more = load.slope_s * m  # one more sequence through all of a request's iterations
        jump = load.prefill_s + one_more / 2
        rho = lam * jump
        if rho >= 1.0:
            return None
        running = lam * m * load.iteration_s  # the requests decoding when it starts
        w = m * (load.decode_s - load.slope_s * load.decode_batch) + one_more * (1 + running / 2)
        first = _counts(lam * (load.decode_s + load.prefill_s))  # prompts that came during its prefill
        start = w + first * jump
        # counts up to 12 standard deviations of an M/D/1 busy period's past its mean
        most = lam * start[-1] / (1 - rho) + 12 * math.sqrt(lam * w / (1 - rho) ** 3) + 12
        total = np.arange(0.0, math.ceil(most))
        later = total[None, :] - first[:, None]  # prompts that arrive during its lifetime
        values = w + total * jump
        with np.errstate(divide="ignore", invalid="ignore"):
            takacs = start[:, None] / values * _poisson(lam * values, np.maximum(later, 0))
        takacs = np.where(later >= 0, takacs, 0.0)
        probs: FloatArray = _poisson(lam * (load.decode_s + load.prefill_s), first) @ takacs
        spread = one_more * np.sqrt(running / 3 + total / 12)
        return values, probs, spread

    def tpot_within(self, rate: float, limit_s: float) -> float:
        """The share of requests whose TPOT is within `limit_s` at `rate`."""
        load = self.load(rate)
        life = None if load is None else self._lifetimes(load)
        if life is None:
            return 0.0
        values, probs, spread = life
        x = limit_s * self.decodes
        inside = np.where(spread > 0, _normal_cdf((x - values) / np.maximum(spread, 1e-300)), values <= x)
        return float(np.dot(probs, inside))

    # ---- TTFT ------------------------------------------------------------------------------
    def _slot_wait(self, load: Load, wait_s: float) -> float:
        """P(a request waits longer than `wait_s` for one of `max_batch` sequence slots)."""
        c = self.max_batch
        held = load.iteration_s * self.decodes + load.decode_s + load.prefill_s  # its time in flight
        offered = load.rate_per_s * held
        if offered >= c:
            return 1.0
        if offered + 8 * math.sqrt(offered) + 8 < c:
            return 0.0
        blocked = 1.0  # Erlang B by its recursion, then Erlang C
        for i in range(1, c + 1):
            blocked = offered * blocked / (i + offered * blocked)
        waits = c * blocked / (c - offered * (1 - blocked))
        return min(1.0, waits * math.exp(-(c - offered) * max(0.0, wait_s) / held))

    def _queue(self, load: Load) -> _Queue | None:
        """The prompts waiting at the start of an iteration: their stationary distribution, on a
        range of units doubled until it holds all but 1e-9 of it; None past CHAIN_UNITS."""
        budget = self.replica.max_tokens - max(1, round(load.decode_batch))
        per_prompt = max(1, math.ceil(self.input_len * PREFILL_UNITS / budget))  # units of one prompt
        per_iteration = max(1, int(budget * per_prompt // self.input_len))  # units an iteration prefills
        queue = _Queue(decode_s=load.decode_s, unit_s=load.prefill_s / per_prompt, per_prompt=per_prompt,
                       per_iteration=per_iteration)  # fmt: skip
        size = per_iteration + 16 * per_prompt
        arrivals = _counts(load.rate_per_s * queue.full_s)
        while size <= CHAIN_UNITS:
            units = np.arange(float(size))
            nxt = (units - np.minimum(units, per_iteration))[:, None] + per_prompt * arrivals[None, :]
            probs = _poisson(load.rate_per_s * queue.length(units)[:, None], arrivals[None, :])
            inside = nxt < size
            move = np.zeros((size, size))
            rows = np.broadcast_to(units[:, None], nxt.shape)[inside].astype(np.int64)
            np.add.at(move, (rows, nxt[inside].astype(np.int64)), probs[inside])
            move /= move.sum(axis=1, keepdims=True)
            system = move.T - np.eye(size)
            system[-1] = 1.0
            dist = np.clip(np.linalg.solve(system, np.eye(size)[-1]), 0.0, None)
            dist /= dist.sum()
            if dist[-2 * per_prompt :].sum() < 1e-9:
                keep = dist > 1e-12
                return replace(queue, units=units[keep], probs=dist[keep])
            size *= 2
        return None

    def ttft_within(self, rate: float, limit_s: float) -> float:
        """The share of requests whose TTFT is within `limit_s` at `rate`.

        A request arrives during an iteration drawn by length, a fraction v of the way through;
        it waits for that iteration, then for the iterations that prefill the units ahead of it
        and its own; its last iteration also takes the prompts that arrived behind it, as many
        as the budget holds."""
        load = self.load(rate)
        if load is None:
            return 0.0
        if rate not in self._queues:
            self._queues[rate] = self._queue(load)
        queue = self._queues[rate]
        if queue is None:
            return 0.0
        lam, j, b = rate, queue.per_prompt, queue.per_iteration
        tau = queue.length(queue.units)
        weight = queue.probs * tau / float(np.dot(queue.probs, tau))
        v = (np.arange(8.0) + 0.5) / 8
        done, left = (v[None, :] * tau[:, None]).ravel(), ((1 - v)[None, :] * tau[:, None]).ravel()
        queued = np.repeat(queue.units - np.minimum(queue.units, b), len(v))
        weight = np.repeat(weight, len(v)) / len(v)
        ahead = _counts(lam * float(done.max()))  # prompts that arrived before it in that iteration
        p_ahead = weight[:, None] * _poisson(lam * done[:, None], ahead[None, :])
        mine = queued[:, None] + j * (ahead[None, :] + 1)  # units up to its own last one
        full = np.ceil(mine / b) - 1  # iterations before its last
        waited = left[:, None] + full * queue.full_s
        room = (limit_s - waited - queue.decode_s) / queue.unit_s  # units its last iteration may hold
        behind_max = np.floor((room - (mine - full * b)) / j)  # prompts behind it that may share it
        # P(no more than behind_max prompts arrive behind it while it waits): a Poisson sum
        mean = lam * waited
        term = np.exp(-mean)
        fits = np.where(behind_max >= 0, term, 0.0)
        for k in range(1, int(min(np.max(behind_max, initial=0.0), b)) + 1):
            term = term * mean / k
            fits += np.where(behind_max >= k, term, 0.0)
        fits = np.where(room >= b, 1.0, fits)  # a full last iteration is still in time
        share = float(np.sum(p_ahead * fits))
        return max(0.0, share - self._slot_wait(load, limit_s - load.prefill_s - load.chunks * load.decode_s))

    # ---- the answers -----------------------------------------------------------------------
    def meets(self, rate: float, *, ttft_limit_s: float, tpot_limit_s: float) -> bool:
        """Do the TPOT and TTFT percentiles at `rate` meet the limits?"""
        q = self.quantile
        return self.tpot_within(rate, tpot_limit_s) >= q and self.ttft_within(rate, ttft_limit_s) >= q

    def capacity(self, *, ttft_limit_s: float, tpot_limit_s: float) -> float:
        """The highest rate (requests/s) whose TTFT and TPOT percentiles meet the limits; 0 when
        even a lone request misses them."""

        def ok(rate: float) -> bool:
            return self.meets(rate, ttft_limit_s=ttft_limit_s, tpot_limit_s=tpot_limit_s)

        if not ok(1e-9):
            return 0.0
        hi = 1.0
        while ok(hi) and hi < 1e9:
            hi *= 2
        lo = hi / 2 if hi > 1 else 0.0
        for _ in range(RATE_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return lo

    def _quantile(self, share: Callable[[float], float]) -> float:
        hi = self.decode_s(1.0)
        while share(hi) < self.quantile:
            hi *= 2
            if hi > 1e6:
                return math.inf
        lo = 0.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if share(mid) >= self.quantile else (mid, hi)
        return hi

    def tpot_quantile(self, rate: float) -> float:
        """The `quantile` TPOT at `rate` (seconds; inf when the replica cannot keep up)."""
        return self._quantile(lambda x: self.tpot_within(rate, x))

    def ttft_quantile(self, rate: float) -> float:
        """The `quantile` TTFT at `rate` (seconds; inf when the replica cannot keep up)."""
        return self._quantile(lambda x: self.ttft_within(rate, x))
