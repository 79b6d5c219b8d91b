"""The serving scenarios of MLPerf and of the validation schema, on top of the simulator.

- `offline`: every request queued at once; throughput at the batch given, or at the largest
  batch whose sequences all fit in the KV cache at full length when none is given.
- `server`: Poisson arrivals; the highest rate whose p99 TTFT and p99 TPOT meet the limits
  (MLPerf's llama2-70b server criterion): a search, in `tapeout.search.serving`.
- `fixed_batch`: a steady batch of sequences decoding together (latency benchmarks); tokens/s
  is the batch over the time of one decode step at the sequences' mean context.
Every replica of a system serves the same share of the traffic, so one replica is simulated
and its throughput multiplied (random routing of a Poisson stream gives each replica a
Poisson stream of its share of the rate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tapeout.checks as checks
from tapeout.errors import DoesNotFit, TapeoutError
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.serve import SECONDS_PER_ITERATION, ServeResult, simulate

MAX_AUTO_BATCH = 4096  # the largest batch `offline` picks on its own (TensorRT-LLM's limit is 2048-4096)
SERVER_REQUESTS_PER_SLOT = 6  # a server run serves this many requests per sequence slot of the batch


def auto_batch(replica: Replica, input_len: float, output_len: float) -> int:
    """The most sequences of this length the KV cache holds at once, up to MAX_AUTO_BATCH.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.perf.system import System
    >>> from tapeout.workloads.models import get_model
    >>> r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")))
    >>> auto_batch(r, 1000, 1000)
    54
    """
    mem = replica.memory
    pages = mem.kv_tokens * replica.plan.attention_groups // mem.kv_block_tokens
    per_seq = mem.pages(round(input_len + output_len))
    batch = min(MAX_AUTO_BATCH, pages // per_seq)
    if batch < 1:
        raise DoesNotFit(
            f"one sequence of {input_len:g} + {output_len:g} tokens needs {per_seq * mem.kv_block_tokens} "
            f"tokens of KV cache; {mem.chip_id} holds {mem.kv_tokens} per chip after the weights"
        )
    return batch


def simulation_seconds(
    replica: Replica, requests: int, input_len: float, output_len: float, batch: int
) -> float:
    """About how long simulating `requests` requests of these mean lengths takes here: output
    tokens over the sequences that decode together (the batch, or what the KV cache holds), plus
    prompt tokens over the token budget, at SECONDS_PER_ITERATION an iteration."""
    held = replica.memory.kv_tokens * replica.plan.attention_groups / (input_len + output_len)
    together = max(1.0, min(float(batch), held, float(requests)))
    iterations = requests * output_len / together + requests * input_len / replica.max_tokens
    return iterations * SECONDS_PER_ITERATION


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    scenario: str
    batch: int
    result: ServeResult | None
    tokens_per_s: float
    ttft_s: float
    tpot_s: float
    rate_per_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario, "batch": self.batch, "tokens_per_s": self.tokens_per_s,
            "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
        }  # fmt: skip
        if self.rate_per_s is not None:
            out["rate_per_s"] = self.rate_per_s
        if self.result is not None:
            out["serving"] = self.result.summary()
        return out


def offline(
    replica: Replica,
    input_len: Lengths | float,
    output_len: Lengths | float,
    *,
    batch: int | None = None,
    replicas: int = 1,
    requests: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = None,
) -> ScenarioResult:
    """Throughput with every request queued at time zero (two batches' worth by default); a
    simulation estimated to take longer than `max_seconds` here is refused before it starts."""
    ins, outs = mean_length(input_len), mean_length(output_len)
    batch = batch or auto_batch(replica, ins, outs)
    n = requests or 2 * batch
    checks.work(
        f"simulating {n:,} requests", simulation_seconds(replica, n, ins, outs, batch), max_seconds, None
    )
    reqs = Requests.offline(n, input_len, output_len)
    res = simulate(replica, reqs, max_batch=batch, replicas=replicas, progress=progress)
    s = res.summary()
    return ScenarioResult(
        scenario="offline", batch=batch, result=res, tokens_per_s=res.tokens_per_s,
        ttft_s=s["ttft_s"]["mean"], tpot_s=s["tpot_s"]["mean"],
    )  # fmt: skip


def fixed_batch(
    replica: Replica, input_len: float, output_len: float | None, *, batch: int, replicas: int = 1
) -> ScenarioResult:
    """A steady batch decoding at the mean context (prompt plus half the output)."""
    if batch < 1:
        raise TapeoutError(f"field 'batch': must be >= 1, got {batch}")
    context = input_len + (output_len or 0) / 2
    mem = replica.memory
    held = batch * mem.pages(round(input_len + (output_len or 0)))
    pages = mem.kv_tokens * replica.plan.attention_groups // mem.kv_block_tokens
    if held > pages:
        raise TapeoutError(
            f"field 'batch': {batch} sequences of {input_len + (output_len or 0):g} tokens need "
            f"{held * mem.kv_block_tokens} tokens of KV cache; {mem.chip_id} holds {pages * mem.kv_block_tokens}"
        )
    step = replica.step_time(Batch(decode_seqs=batch, decode_context=round(batch * (context + 1))))
    ttft = replica.step_time(
        Batch(
            prefill_tokens=batch * round(input_len),
            prefill_seqs=batch,
            prefill_context=batch * round(input_len),
        )
    )
    return ScenarioResult(
        scenario="fixed_batch", batch=batch, result=None, tokens_per_s=replicas * batch / step,
        ttft_s=ttft, tpot_s=step,
    )  # fmt: skip


def mean_length(lengths: Lengths | float) -> float:
    """The mean of a length distribution (or a fixed length)."""
    return lengths.average if isinstance(lengths, Lengths) else float(lengths)
