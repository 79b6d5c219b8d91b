"""LLM serving in a mix: a model served by replicas of one plan, under TTFT and TPOT limits.

The operating point is that of a continuous-batching replica holding `B` sequences at their mean
context (the prompt plus half the answer): every iteration decodes one token for each of them and
admits the prompts of the `B / output_len` requests that finished, so an iteration lasts the decode
step `d(B)` plus `B / output_len` prefills `p` (one prompt of `input_len` tokens alone), the TPOT is
that iteration, and a new request waits one iteration and its own prefill (TTFT). The entry takes
the largest `B` of 1, 2, 4, ... `max_batch` whose TPOT and TTFT meet the limits and whose key/value
cache fits (`sim.llm.Replica.memory`); no queueing is modelled: it is a sustained operating point,
not percentiles of a stream (`tapeout serve` simulates those).

`d` and `p` are `sim.llm.Replica.step_time` on the design (`scalar`), or the same iteration from the
vectorised rules (`batch`): the layers, attention calls and head of one chip of the busiest stage,
power-capped together, then the collectives, times the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

import tapeout.checks as checks
from tapeout.api import system_for
from tapeout.errors import TapeoutError
from tapeout.explore.mix import Context, Fields, Floats, Outcome, best_index, ladder
from tapeout.explore.silicon import Silicon
from tapeout.explore.vector import Designs, total
from tapeout.hardware.spec import ChipSpec
from tapeout.parallel.inference import InferencePlan
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT
from tapeout.sim.llm import Batch, Replica, lower_replica
from tapeout.workloads.graph import Graph
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model
from tapeout.workloads.ops import Op, SendRecv

OWN = ("model", "plan", "input_len", "output_len", "ttft_limit_s", "tpot_limit_s", "max_batch", "max_tokens")
Ops = list[tuple[Op, float]]


@dataclass(eq=False, kw_only=True)
class Serving:
    name: str
    weight: float
    model: LLMConfig
    plan: InferencePlan
    input_len: int
    output_len: int
    ttft_limit_s: float
    tpot_limit_s: float
    max_tokens: int
    software: str
    batches: tuple[int, ...]
    unit: str = "requests"
    metrics: tuple[str, ...] = ("per_s", "tokens_per_s", "batch", "tpot_s", "ttft_s")
    _kinds: list[tuple[float, Graph, Graph]] = field(default_factory=list)
    _graphs: dict[str, Graph] = field(default_factory=dict)
    _slots: dict[float, tuple[int, str]] = field(default_factory=dict)
    _lowered: dict[Batch, tuple[Ops, Ops]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Lower the model once: one chip's share of each kind of layer, the embedding, the head
        and the two attention calls, with their dynamic dimensions at one (as `Replica` does)."""
        self._kinds, self._graphs = lower_replica(self.model, self.plan)

    # ---- the iterations ------------------------------------------------------------------------
    def _batches(self) -> list[Batch]:
        """The prefill of one prompt, then a decode step at each batch size."""
        ctx = self.input_len + self.output_len / 2
        chunk = self.input_len
        out = [Batch(prefill_tokens=chunk, prefill_seqs=1, prefill_context=chunk)]
        return out + [Batch(decode_seqs=b, decode_context=round(b * ctx)) for b in self.batches]

    def _ops(self, batch: Batch) -> tuple[Ops, Ops]:
        """The ops of one iteration on one chip of the busiest stage, as `Replica.step_time` costs
        them: (layers, attention and head; collectives), each with its count; kept per batch."""
        got = self._lowered.get(batch)
        if got is None:
            got = self._lowered[batch] = self._instantiate(batch)
        return got

    def _instantiate(self, batch: Batch) -> tuple[Ops, Ops]:
        p, m = self.plan, self.model
        parts = p.pp * p.attention_groups

        def share(count: int) -> int:
            return -(-count // parts) if count else 0

        tokens = {"tokens": share(batch.tokens)}
        compute = [(n.op_at(tokens), n.count * k) for k, g, _ in self._kinds for n in g.nodes]
        comm = [(n.op_at(tokens), n.count * k) for k, _, g in self._kinds for n in g.nodes]
        if p.pp > 1:
            size = tokens["tokens"] * m.hidden_size * BYTES_PER_ELEMENT[p.numerics.stream]
            comm.append((SendRecv(ranks=2, bytes_per_rank=size, name="pp"), 1.0))
        head = {"tokens": max(1, share(batch.samplers))}
        compute += [(n.op_at(head), n.count) for n in self._graphs["head"].nodes]
        layers = p.stage_layers(m)
        if batch.prefill_seqs:
            q = max(1, round(batch.prefill_tokens / batch.prefill_seqs))
            sizes = {
                "batch": share(batch.prefill_seqs),
                "q": q,
                "kv": max(q, round(batch.prefill_context / batch.prefill_seqs)),
            }
            compute += [(n.op_at(sizes), n.count * layers) for n in self._graphs["prefill"].nodes]
        if batch.decode_seqs:
            sizes = {
                "batch": share(batch.decode_seqs),
                "q": 1,
                "kv": max(1, round(batch.decode_context / batch.decode_seqs)),
            }
            compute += [(n.op_at(sizes), n.count * layers) for n in self._graphs["decode"].nodes]
        return compute, comm

    # ---- the two paths -----------------------------------------------------------------------
    def _system(self, chip: ChipSpec) -> System:
        return system_for(chip, self.plan.chips, self.software, "serving")[0]

    def slots(self, chip: ChipSpec) -> tuple[int, str]:
        """Sequences of a whole answer's context a replica's key/value cache holds on this chip
        (`Replica.memory`), by memory capacity; 0 and the reason when the model does not fit."""
        key = chip.memory.capacity_gb
        if key not in self._slots:
            try:
                rep = Replica.of(self.model, self._system(chip), self.plan, max_tokens=self.max_tokens)
                slots = (
                    rep.memory.kv_tokens * self.plan.attention_groups // (self.input_len + self.output_len)
                )
                self._slots[key] = (
                    slots,
                    "" if slots else f"{self.name}: the key/value cache holds no sequence",
                )
            except TapeoutError as exc:
                self._slots[key] = (0, f"{self.name}: {exc}")
        return self._slots[key]

    def scalar(self, silicon: Silicon) -> Outcome:
        """The reference path: `Replica.step_time` on the design's real system."""
        assert silicon.chip is not None
        slots, why = self.slots(silicon.chip)
        times = np.full(len(self.batches) + 1, np.nan)
        if slots:
            rep = Replica.of(self.model, self._system(silicon.chip), self.plan, max_tokens=self.max_tokens)
            times = np.array([rep.step_time(b) for b in self._batches()])
        return self._point(times[None, 1:], times[:1], np.array([slots]), [why])

    def batch(self, silicons: Sequence[Silicon]) -> Outcome:
        """The fast path: every iteration's ops costed on all designs at once."""
        chips = [s.chip for s in silicons if s.chip is not None]
        assert len(chips) == len(silicons)
        d = Designs(chips=chips, system_chips=self.plan.chips, cal=self._system(chips[0]).cal, load="serving",
                    joules_of=lambda i, p: silicons[i].joules(p))  # fmt: skip
        seen: dict[Op, tuple[Floats, Floats]] = {}
        times = []
        for b in self._batches():
            compute, comm = self._ops(b)
            t, e = total(compute, d, seen)
            times.append((d.capped(t, e) + total(comm, d, seen)[0]) * self.plan.pp)
        step = np.stack(times, axis=1)
        slots = [self.slots(c) for c in chips]
        return self._point(step[:, 1:], step[:, 0], np.array([s for s, _ in slots]), [w for _, w in slots])

    def _point(self, decode: Floats, prefill: Floats, slots: np.ndarray, why: list[str]) -> Outcome:
        """The operating point (module docstring) from the decode steps at each batch size, the
        prefill of one prompt and the sequences the cache holds, per design."""
        b = np.array(self.batches, dtype=np.float64)[None, :]
        iteration = decode + b / self.output_len * prefill[:, None]
        ttft = prefill[:, None] + iteration
        ok = (b <= slots[:, None]) & (iteration <= self.tpot_limit_s) & (ttft <= self.ttft_limit_s)
        i, rows = best_index(ok), np.arange(len(prefill))
        feasible: npt.NDArray[np.bool_] = np.asarray(ok.any(axis=1), dtype=bool)
        tpot, first, batch = iteration[rows, i], ttft[rows, i], b[0, i]
        tokens = np.where(feasible, batch / tpot / self.plan.chips, np.nan)
        reasons = [
            why[r] or ("" if feasible[r] else
                       f"{self.name}: at batch 1 the TPOT is {iteration[r, 0]:.3g} s (limit {self.tpot_limit_s:g}) "
                       f"and the TTFT {ttft[r, 0]:.3g} s (limit {self.ttft_limit_s:g})")
            for r in range(len(prefill))
        ]  # fmt: skip
        metrics = {
            "per_s": tokens / self.output_len, "tokens_per_s": tokens, "batch": np.where(feasible, batch, np.nan),
            "tpot_s": np.where(feasible, tpot, np.nan), "ttft_s": np.where(feasible, first, np.nan),
        }  # fmt: skip
        return Outcome(metrics=metrics, feasible=feasible & (slots > 0), reasons=reasons)


def lower(f: Fields, name: str, weight: float, context: Context) -> Serving:
    model = resolve_model(f.model(), f.where, name)
    if not isinstance(model, LLMConfig):
        raise TapeoutError(f"{f.where}: field 'model': llm_serving needs a language model")
    plan = f.plan(InferencePlan)
    plan.replicas(model, plan.chips)
    max_tokens = f.count("max_tokens", "tokens", default=8192, high=checks.MAX_TOKENS)
    input_len = f.count("input_len", "tokens", default=1024, high=max_tokens)
    output_len = f.count("output_len", "tokens", default=256, high=checks.MAX_TOKENS)
    if output_len < 2:
        raise TapeoutError(f"{f.where}: field 'output_len': a TPOT needs >= 2 tokens, got {output_len}")
    return Serving(
        name=name, weight=weight, model=model, plan=plan, input_len=input_len, output_len=output_len,
        ttft_limit_s=f.number("ttft_limit_s", "s"), tpot_limit_s=f.number("tpot_limit_s", "s"),
        max_tokens=max_tokens, software=context.software,
        batches=ladder(f.count("max_batch", "sequences", default=256, high=65_536)),
    )  # fmt: skip
