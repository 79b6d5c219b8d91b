"""The Python API: one call from a model, a chip and a plan to a typed result, for serving,
training and recommendation models. The CLI is a thin layer over these; every result has
`as_dict()` for JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tapeout.checks as checks
from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import resolve_chip
from tapeout.hardware.spec import ChipSpec
from tapeout.parallel.fields import as_dict
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.memory import Memory
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.calibration import Profile, SoftwareRef, table
from tapeout.perf.system import System
from tapeout.search import recsys as recsys_search
from tapeout.search.training import SearchResult
from tapeout.search.training import search as search_plans
from tapeout.sim import recsys as recsys_sim
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.serve import SECONDS_PER_ITERATION, ServeResult, simulate
from tapeout.sim.train import TrainingResult, train_step
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model
from tapeout.workloads.recsys import RecsysConfig

ModelRef = str | Mapping[str, Any]
# What one training plan tried by the search costs on the 2-core development machine (bench_train:
# 2.0 s for 48,144 plans, rounded up), for refusing a search that would exceed its time budget
# before it starts; a serving iteration's is `sim.serve.SECONDS_PER_ITERATION`.
SECONDS_PER_PLAN = 50e-6
MAX_SECONDS = 600.0  # the default budget of one call
MAX_REQUESTS = 10_000_000  # a simulated stream keeps about 250 bytes per request
MIN_RATE = 1e-6  # requests/s: one every 11.6 days; slower streams are not a serving load


def system_for(
    chip: ChipSpec, chips: int, software: str | None, workload: str, *, chips_per_node: int | None = None
) -> tuple[System, Profile]:
    """`chips` of `chip` with the efficiency figures of `software` (`NAME[@VERSION]`; None: the
    chip's stack, or the profile for chips with no measured software) for a `workload` (serving,
    training, recsys), and which figures those are."""
    ref = SoftwareRef.parse(software) if software is not None else None
    cal, profile = table().resolve(chip.family, ref, workload)
    return System.of(chip, chips, chips_per_node=chips_per_node, calibration=cal), profile


def software_dict(profile: Profile) -> dict[str, Any]:
    """How a report states the figures it ran with."""
    return {"asked": profile.asked, "figures": list(profile.used), "note": profile.note}


def _llm(model: ModelRef | LLMConfig, what: str) -> LLMConfig:
    config = model if isinstance(model, LLMConfig) else resolve_model(model, what, None)
    if not isinstance(config, LLMConfig):
        raise TapeoutError(f"field 'model': {what} needs a language model, not a recommendation model")
    return config


def _name(model: object) -> str:
    return model if isinstance(model, str) else "inline"


# ---- serving -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One typical iteration of a phase: its size, time and what bounds it."""

    size: int  # tokens of a prefill chunk, or decoding sequences
    time_s: float
    bound: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeReport:
    """What serving a request stream did: throughput, latency percentiles, memory, phases."""

    model: str
    hardware: str
    chips: int
    plan: InferencePlan
    replicas: int
    policy: str
    arrivals: str  # "offline" (all queued at once), "poisson" or "trace"
    result: ServeResult
    memory: Memory
    prefill: Phase
    decode: Phase
    software: Profile

    @property
    def tokens_per_s(self) -> float:
        return self.result.tokens_per_s

    def percentiles(self, metric: str) -> dict[str, float]:
        """`ttft_s`, `tpot_s` or `e2e_s`: mean, p50, p90, p99."""
        return dict(self.result.summary()[metric])

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "hardware": self.hardware, "chips": self.chips,
            "software": software_dict(self.software),
            "plan": {**as_dict(self.plan), "replicas": self.replicas, "kv_precision": self.plan.numerics.kv},
            "policy": self.policy, "arrivals": self.arrivals, **self.result.summary(),
            "memory_per_chip": self.memory.as_dict(),
            "phases": {
                "prefill": {"tokens": self.prefill.size, "time_s": self.prefill.time_s, "bound": self.prefill.bound},
                "decode": {"sequences": self.decode.size, "time_s": self.decode.time_s, "bound": self.decode.bound},
            },
        }  # fmt: skip


def replica(
    model: ModelRef | LLMConfig,
    hardware: ModelRef,
    chips: int,
    plan: InferencePlan,
    *,
    max_tokens: int = 8192,
    software: str | None = None,
) -> tuple[Replica, int, Profile]:
    """A replica of `model` on `hardware` under `plan` with the figures of `software`, how many
    of them `chips` hold, and which figures those are."""
    config = _llm(model, "serving")
    chip = resolve_chip(hardware if isinstance(hardware, str) else dict(hardware), "serve", None)
    replicas = plan.replicas(config, chips, chip.id)
    system, profile = system_for(chip, plan.chips, software, "serving")
    return Replica.of(config, system, plan, max_tokens=max_tokens), replicas, profile


def phases(rep: Replica, input_len: float, decode_batch: int, context: float) -> tuple[Phase, Phase]:
    """A typical prefill (one prompt, chunked to the token budget) and a typical decode iteration."""
    chunk = min(max(1, round(input_len)), rep.max_tokens)
    prefill = rep.step(Batch(prefill_tokens=chunk, prefill_seqs=1, prefill_context=chunk))
    n = max(1, decode_batch)
    decode = rep.step(Batch(decode_seqs=n, decode_context=round(n * context)))
    return Phase(size=chunk, time_s=prefill.time_s, bound=prefill.bound), Phase(
        size=n, time_s=decode.time_s, bound=decode.bound
    )


def serve(
    model: ModelRef | LLMConfig,
    hardware: ModelRef,
    chips: int = 1,
    plan: InferencePlan | None = None,
    *,
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
    allow_long_context: bool = False,
    max_seconds: float | None = MAX_SECONDS,
    progress: Callable[[int], None] | None = None,
    software: str | None = None,
) -> ServeReport:
    """Serve a request stream on `chips` chips and report what happened.

    Requests come from `trace` (JSONL or CSV), else a Poisson stream at `rate` requests/s for the
    whole system, else all at once (offline). Every replica gets an equal share of the stream.
    A request longer than the model's context is refused unless `allow_long_context`; a run
    estimated to take longer than `max_seconds` here is refused before it starts (None: no limit).

    >>> out = serve("llama-2-7b", "h100-sxm", requests=64, input_len=128, output_len=32)
    >>> out.result.requests, out.arrivals, out.memory.weights_bytes > 13e9
    (64, 'offline', True)
    """
    if rate is not None and trace is not None:
        raise TapeoutError("give either a request rate or a trace file, not both")
    chips = checks.chips(chips)
    requests = checks.count("requests", requests, high=MAX_REQUESTS, unit="requests")
    max_batch = checks.optional_count("max_batch", max_batch, unit="sequences")
    max_tokens = checks.count("max_tokens", max_tokens, high=checks.MAX_TOKENS, unit="tokens")
    for name, limit in (("ttft_limit_s", ttft_limit_s), ("tpot_limit_s", tpot_limit_s)):
        checks.optional_number(name, limit, "s", above=0)
    input_len, output_len = _length("input_len", input_len), _length("output_len", output_len)
    plan = plan or InferencePlan()
    rep, replicas, profile = replica(model, hardware, chips, plan, max_tokens=max_tokens, software=software)
    reqs, arrivals = _stream(trace, rate, requests, replicas, input_len, output_len, seed)
    _fits_context(rep.model, reqs, allow_long_context)
    checks.work(f"simulating {len(reqs):,} requests", _serve_seconds(rep, reqs, rate, replicas, max_batch),
                max_seconds, "--max-seconds")  # fmt: skip
    result = simulate(
        rep, reqs, policy=policy, replicas=replicas, max_batch=max_batch, max_tokens=max_tokens,
        ttft_limit_s=ttft_limit_s, tpot_limit_s=tpot_limit_s, progress=progress,
    )  # fmt: skip
    mean_in, mean_out = float(reqs.input_len.mean()), float(reqs.output_len.mean())
    decode_batch = round(float((reqs.output_len - 1).sum()) / max(1, result.iterations))
    prefill, decode = phases(rep, mean_in, decode_batch, mean_in + mean_out / 2)
    return ServeReport(
        model=_name(model), hardware=rep.system.chip.id, chips=chips, plan=plan, replicas=replicas,
        policy=policy, arrivals=arrivals, result=result, memory=rep.memory, prefill=prefill, decode=decode,
        software=profile,
    )  # fmt: skip


def _length(field: str, value: Lengths | float) -> Lengths | float:
    """A length in tokens: a number in [1, MAX_TOKENS], or a distribution whose parameters are
    finite and its lengths within MAX_TOKENS."""
    if not isinstance(value, Lengths):
        return checks.number(field, value, "tokens", low=1, high=checks.MAX_TOKENS)
    for name in ("mean", "low", "high"):
        checks.number(f"{field}.{name}", getattr(value, name), "tokens", high=checks.MAX_TOKENS)
    checks.number(f"{field}.sigma", value.sigma)
    return value


def _stream(
    trace: str | Path | None, rate: float | None, n: int, replicas: int, input_len: Lengths | float,
    output_len: Lengths | float, seed: int,
) -> tuple[Requests, str]:  # fmt: skip
    """One replica's share of the requests, and how they arrive."""
    if trace is not None:
        reqs = Requests.from_trace(trace)
        if replicas > 1:  # round-robin: replica 0 serves every replicas-th request
            reqs = Requests(
                reqs.arrival_s[::replicas], reqs.input_len[::replicas], reqs.output_len[::replicas]
            )
        return reqs, "trace"
    if rate is not None:
        rate = checks.number("rate", rate, "requests/s", low=MIN_RATE)
        return Requests.poisson(n, rate / replicas, input_len, output_len, seed=seed), "poisson"
    return Requests.offline(n, input_len, output_len, seed=seed), "offline"


def _fits_context(config: LLMConfig, reqs: Requests, allow: bool) -> None:
    longest = int((reqs.input_len + reqs.output_len).max())
    context = config.max_position_embeddings
    if longest > context and not allow:
        raise TapeoutError(
            f"a request of {longest:,} tokens (input and output) is longer than the model's context of "
            f"{context:,} tokens (max_position_embeddings); give --allow-long-context to simulate it anyway"
        )


def _serve_seconds(
    rep: Replica, reqs: Requests, rate: float | None, replicas: int, max_batch: int | None
) -> float:
    """About how long simulating `reqs` takes: iterations (output tokens over the sequences that
    decode together, plus prompt tokens over the token budget) at SECONDS_PER_ITERATION."""
    longest = float((reqs.input_len + reqs.output_len).mean())
    slots = max(1.0, rep.memory.kv_tokens * rep.plan.attention_groups / longest)
    batch = min(slots, float(max_batch or slots), float(len(reqs)))
    if rate is not None:  # a light stream decodes few sequences at a time (Little's law)
        step = rep.step_time(Batch(decode_seqs=1, decode_context=round(longest)))
        batch = min(batch, max(1.0, rate / replicas * float(reqs.output_len.mean()) * step))
    iterations = float(reqs.output_len.sum()) / batch + float(reqs.input_len.sum()) / rep.max_tokens
    return iterations * SECONDS_PER_ITERATION


# ---- training ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TrainReport:
    model: str
    hardware: str
    chips: int
    software: Profile
    result: TrainingResult
    search: SearchResult | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "hardware": self.hardware, "chips": self.chips,
               "software": software_dict(self.software), **self.result.as_dict()}  # fmt: skip
        if self.search is not None:
            s = self.search
            out["search"] = {"tried": s.tried, "feasible": s.feasible, "exhausted": s.exhausted,
                             "failures": s.failures}  # fmt: skip
        return out


def train(
    model: ModelRef | LLMConfig,
    hardware: ModelRef,
    chips: int,
    *,
    seq_len: int,
    global_batch: int,
    plan: TrainingPlan | None = None,
    search: bool = False,
    pins: Mapping[str, object] | None = None,
    budget: int = 200_000,
    chips_per_node: int | None = None,
    allow_long_context: bool = False,
    max_seconds: float | None = MAX_SECONDS,
    software: str | None = None,
) -> TrainReport:
    """Predict one training step with `plan`, or with the fastest plan that fits (`search`), the
    plan fields in `pins` kept and the rest of `plan` (overlaps, attention kernel, precision)
    describing the software. Sequences longer than the model's context are refused unless
    `allow_long_context`; a search whose budget of plans would take longer than `max_seconds`
    is refused before it starts.

    >>> out = train("llama-3.1-8b", "h100-sxm", 8, seq_len=4096, global_batch=64,
    ...             plan=TrainingPlan(zero=2, recompute="selective"))
    >>> sorted(out.result.breakdown_s) == ["compute", "exposed_communication", "optimizer", "pipeline_bubble"]
    True
    """
    config = _llm(model, "training")
    chips = checks.chips(chips)
    seq_len = checks.count("seq_len", seq_len, high=checks.MAX_TOKENS, unit="tokens")
    global_batch = checks.count("global_batch", global_batch, unit="sequences")
    budget = checks.count("budget", budget, unit="plans")
    chips_per_node = checks.optional_count("chips_per_node", chips_per_node, high=chips, unit="chips")
    if seq_len > config.max_position_embeddings and not allow_long_context:
        raise TapeoutError(
            f"field 'seq_len': {seq_len:,} tokens is longer than the model's context of "
            f"{config.max_position_embeddings:,} tokens; give --allow-long-context to train at it anyway"
        )
    if search:
        checks.work(
            f"a search of up to {budget:,} plans", budget * SECONDS_PER_PLAN, max_seconds, "--max-seconds"
        )
    chip = resolve_chip(hardware if isinstance(hardware, str) else dict(hardware), "train", None)
    system, profile = system_for(chip, chips, software, "training", chips_per_node=chips_per_node)
    plan = plan or TrainingPlan()
    if not search:
        if pins:
            raise TapeoutError("pins go with a search; give the plan itself otherwise")
        result = train_step(config, system, plan, seq_len=seq_len, global_batch=global_batch)
        return TrainReport(model=_name(model), hardware=chip.id, chips=chips, software=profile, result=result)
    found = search_plans(
        config, system, seq_len=seq_len, global_batch=global_batch, precision=plan.precision, budget=budget,
        tp_overlap=plan.tp_overlap, ep_overlap=plan.ep_overlap, attention=plan.attention, fixed=pins,
    )  # fmt: skip
    return TrainReport(model=_name(model), hardware=chip.id, chips=chips, software=profile, result=found.best,
                       search=found)  # fmt: skip


# ---- recommendation models -----------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class RecsysReport:
    model: str
    hardware: str
    chips: int
    mode: str  # "offline", "server" or "training"
    precision: str  # the dense part's format
    embedding_precision: str
    software: Profile
    result: recsys_sim.RecsysInferenceResult | recsys_sim.RecsysTrainingResult

    @property
    def sharding(self) -> str:
        return self.result.sharding

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "hardware": self.hardware, "chips": self.chips, "mode": self.mode,
                "precision": self.precision, "embedding_precision": self.embedding_precision,
                "software": software_dict(self.software),
                **self.result.as_dict()}  # fmt: skip


def recsys(
    model: ModelRef | RecsysConfig,
    hardware: ModelRef,
    chips: int = 1,
    plan: RecsysPlan | None = None,
    *,
    batch: int | None = None,
    pairs_per_sample: float = 1.0,
    latency_limit_s: float | None = None,
    training: bool = False,
    software: str | None = None,
) -> RecsysReport:
    """Inference throughput at a batch, the highest QPS within a p99 limit, or a training step.

    >>> out = recsys("dlrm-v2", "h100-sxm", 8, pairs_per_sample=270)
    >>> out.sharding, out.result.samples_per_s > 1e5
    ('data', True)
    """
    config = model if isinstance(model, RecsysConfig) else resolve_model(model, "recsys", None)
    if not isinstance(config, RecsysConfig):
        raise TapeoutError("field 'model': a recommendation model is needed, not a language model")
    chips = checks.chips(chips)
    batch = checks.optional_count("batch", batch, unit="samples")
    pairs_per_sample = checks.number(
        "pairs_per_sample", pairs_per_sample, "pairs", low=1, high=checks.MAX_PAIRS_PER_SAMPLE
    )
    checks.optional_number("latency_limit_s", latency_limit_s, "s", above=0)
    if training:
        if batch is None:
            raise TapeoutError("field 'batch': training needs the global batch (samples per step)")
        recsys_sim.check_global_batch(batch, chips, "batch")
    chip = resolve_chip(hardware if isinstance(hardware, str) else dict(hardware), "recsys", None)
    system, profile = system_for(chip, chips, software, "recsys")
    rs = recsys_sim.RecsysSystem.of(config, system, plan or RecsysPlan(), training=training)
    result: recsys_sim.RecsysInferenceResult | recsys_sim.RecsysTrainingResult
    pairs = round(batch * pairs_per_sample) if batch else None
    if training:
        assert batch is not None  # checked above
        mode, result = "training", recsys_sim.train_step(rs, batch)
    elif latency_limit_s is not None:
        mode, result = (
            "server",
            recsys_search.server(
                rs, latency_limit_s=latency_limit_s, pairs_per_sample=pairs_per_sample, batch_pairs=pairs
            ),
        )
    else:
        mode, result = "offline", recsys_sim.offline(rs, pairs_per_sample=pairs_per_sample, batch_pairs=pairs)
    return RecsysReport(model=_name(model), hardware=chip.id, chips=chips, mode=mode, precision=rs.dense_precision,
                        embedding_precision=rs.embedding_precision, software=profile, result=result)  # fmt: skip
