"""LLM training in a mix: steps of a model on a system of designs under one plan.

A training step composes pipeline schedules, ZeRO, recomputation and overlapped communication
(`sim.train.train_step`); the batch path runs that simulator design by design (about a
millisecond each) rather than a vectorised copy of it. Its unit is a sequence: `per_s` is
sequences per second per chip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import tapeout.checks as checks
from tapeout.api import system_for
from tapeout.errors import TapeoutError
from tapeout.explore.mix import Context, Fields, Outcome
from tapeout.explore.silicon import Silicon
from tapeout.parallel.training import TrainingPlan
from tapeout.sim.train import train_step
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model

OWN = ("model", "chips", "plan", "seq_len", "global_batch")


@dataclass(eq=False, kw_only=True)
class Training:
    name: str
    weight: float
    model: LLMConfig
    chips: int
    plan: TrainingPlan
    seq_len: int
    global_batch: int
    software: str
    unit: str = "sequences"
    metrics: tuple[str, ...] = ("per_s", "tokens_per_s", "step_s", "mfu")

    def scalar(self, silicon: Silicon) -> Outcome:
        assert silicon.chip is not None
        step, mfu, why = np.nan, np.nan, ""
        try:
            system = system_for(silicon.chip, self.chips, self.software, "training")[0]
            r = train_step(
                self.model, system, self.plan, seq_len=self.seq_len, global_batch=self.global_batch
            )
            step, mfu = r.step_time_s, r.mfu
        except TapeoutError as exc:
            why = f"{self.name}: {exc}"
        per_s = self.global_batch / step / self.chips
        metrics = {"per_s": np.array([per_s]), "tokens_per_s": np.array([per_s * self.seq_len]),
                   "step_s": np.array([step]), "mfu": np.array([mfu])}  # fmt: skip
        return Outcome(metrics=metrics, feasible=np.array([not why]), reasons=[why])

    def batch(self, silicons: Sequence[Silicon]) -> Outcome:
        parts = [self.scalar(s) for s in silicons]
        return Outcome(
            metrics={k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics},
            feasible=np.concatenate([p.feasible for p in parts]), reasons=[p.reasons[0] for p in parts],
        )  # fmt: skip


def lower(f: Fields, name: str, weight: float, context: Context) -> Training:
    model = resolve_model(f.model(), f.where, name)
    if not isinstance(model, LLMConfig):
        raise TapeoutError(f"{f.where}: field 'model': llm_training needs a language model")
    seq_len = f.count("seq_len", "tokens", high=checks.MAX_TOKENS)
    if seq_len > model.max_position_embeddings:
        raise TapeoutError(f"{f.where}: field 'seq_len': {seq_len:,} tokens is longer than the model's context "
                           f"of {model.max_position_embeddings:,}")  # fmt: skip
    return Training(
        name=name, weight=weight, model=model, chips=f.count("chips", "chips", high=checks.MAX_CHIPS),
        plan=f.plan(TrainingPlan), seq_len=seq_len, global_batch=f.count("global_batch", "sequences"),
        software=context.software,
    )  # fmt: skip
