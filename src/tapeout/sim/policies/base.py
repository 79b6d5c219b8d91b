"""What the serving event loop and its scheduling policies share: an engine (one replica with a
clock), the ledger of every request, and the policy protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import FloatArray, IntArray, Requests


@dataclass(eq=False)
class Engine:
    replica: Replica
    name: str
    clock: float = 0.0
    iterations: int = 0


@dataclass(eq=False)
class Ledger:
    """What happened to every request: when it got its first token and when it finished."""

    requests: Requests
    first_token_s: FloatArray = field(init=False)
    finish_s: FloatArray = field(init=False)
    generated: IntArray = field(init=False)
    preemptions: int = 0

    def __post_init__(self) -> None:
        n = len(self.requests)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.generated = np.zeros(n, dtype=np.int64)


class Policy(Protocol):
    engines: list[Engine]

    def next_engine(self) -> Engine | None:
        """The engine that acts next, or None when every request has finished."""

    def schedule(self, engine: Engine) -> Batch | None:
        """The batch `engine` runs now; None to idle it until its next event (set its clock)."""

    def complete(self, engine: Engine, batch: Batch) -> None:
        """Book the tokens of the iteration that ended at `engine.clock`."""


PolicyFactory = Callable[..., Policy]
