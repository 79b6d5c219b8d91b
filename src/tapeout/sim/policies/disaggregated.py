"""Prefill/decode disaggregation over two pools of replicas (DistServe, Splitwise, Dynamo).

Prompts run on the prefill pool (chunked, requests spread round-robin); the sequence's KV cache
then moves to the decode replica with the fewest sequences, each prefill chip sending its share
to its decode counterpart over the scale-out network at the stack's link efficiency (over the
scale-up links when the system has no network), and decoding continues there. Each replica
batches continuously (`tapeout.sim.policies.continuous`). The engine whose next event is
earliest acts first, so a decode replica never sees a request before its cache has arrived.
"""

from __future__ import annotations

import math

from tapeout.errors import TapeoutError
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.policies.base import Engine, Ledger
from tapeout.sim.policies.continuous import Continuous


class Disaggregated:
    def __init__(
        self,
        replica: Replica,
        ledger: Ledger,
        *,
        decode_replica: Replica | None = None,
        prefill_replicas: int = 1,
        decode_replicas: int = 1,
        max_batch: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        for name, value in (("prefill_replicas", prefill_replicas), ("decode_replicas", decode_replicas)):
            if value < 1:
                raise TapeoutError(f"field '{name}': must be >= 1, got {value}")
        decode_replica = decode_replica or replica
        n = len(ledger.requests)
        self.prefill = [
            Continuous(
                replica,
                ledger,
                max_tokens=max_tokens,
                ids=list(range(i, n, prefill_replicas)),
                handoff=self._handoff,
                name=f"prefill-{i}",
            )
            for i in range(prefill_replicas)
        ]
        self.decode = [
            Continuous(
                decode_replica,
                ledger,
                max_batch=max_batch,
                max_tokens=max_tokens,
                ids=[],
                prefilled=True,
                name=f"decode-{i}",
            )
            for i in range(decode_replicas)
        ]
        self.parts = self.prefill + self.decode
        self.engines = [p.engines[0] for p in self.parts]
        self._owner = {id(p.engines[0]): p for p in self.parts}
        system = replica.system
        bandwidth = system.nic_bandwidth or system.chip.link_bandwidth
        if bandwidth <= 0:
            raise TapeoutError(
                f"disaggregated serving on {system.chip.id}: no network or link to move KV caches"
            )
        self.seconds_per_token = replica.memory.kv_bytes_per_token / (bandwidth * system.cal.link)
        self.input_len = ledger.requests.input_len

    def _handoff(self, rid: int, now: float) -> None:
        target = min(self.decode, key=lambda d: d.load)
        target.inject(rid, now + int(self.input_len[rid]) * self.seconds_per_token)

    def _ready(self, part: Continuous) -> float:
        if not part.idle:
            return part.engines[0].clock
        if part.waiting:
            return max(part.engines[0].clock, part.waiting[0][0])
        return math.inf

    def next_engine(self) -> Engine | None:
        live = [p for p in self.parts if p.next_engine() is not None]
        if not live:
            return None
        return min(live, key=self._ready).engines[0]

    def schedule(self, engine: Engine) -> Batch | None:
        return self._owner[id(engine)].schedule(engine)

    def complete(self, engine: Engine, batch: Batch) -> None:
        self._owner[id(engine)].complete(engine, batch)
