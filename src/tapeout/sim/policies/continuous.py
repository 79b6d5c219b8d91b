"""Continuous batching with chunked prefill (vLLM, TensorRT-LLM in-flight batching).

Every iteration, in order:
1. every decoding sequence gets its next token;
2. prompts already admitted continue in chunks, then queued requests are admitted in arrival
   order while the iteration's token budget, the sequence limit `max_batch` and free pages of
   the paged KV cache last. A chunk that ends a prompt samples the first output token.

Admission, as `admission` says:
- `greedy` (the default; vLLM's): pages for the prompt suffice; the cache grows page by page, and when a
  decoding sequence finds no free page the most recently admitted ones are preempted (their
  pages freed; they are re-queued first and later recompute their prompt plus what they
  generated).
- `reserve` (TensorRT-LLM's GUARANTEED_NO_EVICT, with the request's true output length): a
  request is admitted only when the pages for its whole length are free; nothing is evicted.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.policies.base import Engine, Ledger


@dataclass(slots=True)
class _Prompt:
    rid: int
    done: int
    target: int


class Continuous:
    """One engine serving a request stream. With `prefilled`, requests arrive with their prompt
    in the cache and their first token sampled (the decode side of disaggregated serving); with
    `handoff`, a request leaves once its first token is sampled and `handoff(id, time)` is
    called (the prefill side)."""

    def __init__(
        self,
        replica: Replica,
        ledger: Ledger,
        *,
        max_batch: int | None = None,
        max_tokens: int | None = None,
        ids: list[int] | None = None,
        prefilled: bool = False,
        handoff: Callable[[int, float], None] | None = None,
        admission: Literal["reserve", "greedy"] = "greedy",
        name: str = "replica",
    ) -> None:
        self.engines = [Engine(replica, name)]
        self.ledger = ledger
        req = ledger.requests
        self.inp, self.out = req.input_len, req.output_len
        mem = replica.memory
        self.block = mem.kv_block_tokens
        self.free_pages = mem.kv_tokens * replica.plan.attention_groups // self.block
        self.total_pages = self.free_pages
        self.max_batch = max_batch if max_batch is not None else 1 << 30
        self.budget = max_tokens if max_tokens is not None else replica.max_tokens
        for name_, value in (("max_batch", self.max_batch), ("max_tokens", self.budget)):
            if value < 1:
                raise TapeoutError(f"field '{name_}': must be >= 1, got {value}")
        if admission not in ("reserve", "greedy"):
            raise TapeoutError(f"field 'admission': {admission!r}; known: reserve, greedy")
        self.reserve = admission == "reserve"
        # KV pages each request holds (under `greedy` a decoding sequence's follow from its cache)
        self.held = np.zeros(len(req), dtype=np.int64)
        self.prefilled = prefilled
        self.handoff = handoff
        order = range(len(req)) if ids is None else ids
        self.waiting: list[tuple[float, int]] = [(float(req.arrival_s[i]), i) for i in order]
        heapq.heapify(self.waiting)
        self.expected = len(self.waiting)
        self.finished = 0
        self.resume: list[int] = []  # preempted, served before new arrivals (oldest first)
        self.prompts: list[_Prompt] = []
        # Decoding sequences in admission order. Each decodes one token in every iteration, so
        # its state follows from the iteration count `tick`: it holds `kv0 + tick` tokens and
        # finishes after iteration `end`; `ends` books them by that iteration. `residues`
        # counts them by `kv0` modulo the page size: those whose cache fills its last page
        # (they need a new one before they decode) are one residue class per iteration.
        self.tick = 0
        self.decoding: dict[int, tuple[int, int]] = {}  # id -> (kv0, end)
        self.ends: dict[int, list[int]] = {}
        self.residues = [0] * self.block
        self.kv_sum = 0  # tokens in the cache over the decoding sequences
        self._joining: list[tuple[int, int]] = []  # prefilled arrivals, decoding from the next iteration
        self._chunks: list[tuple[_Prompt, int]] = []
        self._decoding = 0

    # ---- the stream ------------------------------------------------------------------------
    def inject(self, rid: int, at: float) -> None:
        """A request that becomes ready at `at` (after the policy created this engine)."""
        heapq.heappush(self.waiting, (at, rid))
        self.expected += 1

    @property
    def load(self) -> int:
        """Requests this engine holds: decoding, being prefilled or waiting."""
        return len(self.decoding) + len(self._joining) + len(self.prompts) + len(self.waiting)

    @property
    def idle(self) -> bool:
        return not (self.prompts or self.resume or self.decoding or self._joining)

    def next_engine(self) -> Engine | None:
        return None if self.finished >= self.expected and not self.waiting else self.engines[0]

    # ---- one iteration -----------------------------------------------------------------------
    def _pages(self, tokens: int) -> int:
        return -(-tokens // self.block)

    def _join(self, rid: int, kv: int) -> None:
        """A sequence that starts decoding with `kv` tokens in the cache, as of now."""
        left = int(self.out[rid] - self.ledger.generated[rid])
        kv0 = kv - self.tick
        self.decoding[rid] = (kv0, self.tick + left)
        self.ends.setdefault(self.tick + left, []).append(rid)
        self.residues[kv0 % self.block] += 1
        self.kv_sum += kv

    def _leave(self, rid: int) -> int:
        """Take a decoding sequence out; the KV pages it held."""
        kv0, _ = self.decoding.pop(rid)
        kv = kv0 + self.tick
        self.residues[kv0 % self.block] -= 1
        self.kv_sum -= kv
        pages = int(self.held[rid]) if self.reserve else self._pages(kv)
        self.held[rid] = 0
        return pages

    def _growing(self) -> int:
        """Decoding sequences whose last page is full: each takes a new page to decode."""
        return self.residues[-self.tick % self.block]

    def _preempt_for(self, need: int) -> int:
        """Free pages by preempting the newest decoding sequences; the pages the rest need."""
        while need > self.free_pages and self.decoding:
            rid = next(reversed(self.decoding))
            end = self.decoding[rid][1]
            self.ledger.generated[rid] = self.out[rid] - (end - self.tick)
            self.free_pages += self._leave(rid)
            self.resume.append(rid)
            self.ledger.preemptions += 1
            need = self._growing()
        return need

    def _admit(self, now: float, budget: int, in_flight: int) -> None:
        while budget > 0 and in_flight < self.max_batch:
            if self.resume:
                rid, from_resume = self.resume[0], True
            elif self.waiting and self.waiting[0][0] <= now:
                rid, from_resume = self.waiting[0][1], False
            else:
                return
            gen = int(self.ledger.generated[rid])
            target = int(self.inp[rid]) + (gen if from_resume else 0)
            full = target + int(self.out[rid]) - max(gen, 1)
            if self._pages(full) > self.total_pages:
                raise TapeoutError(
                    f"request {rid}: {int(self.inp[rid])} input + {int(self.out[rid])} output tokens need "
                    f"{self._pages(full) * self.block} tokens of KV cache; the replica holds "
                    f"{self.total_pages * self.block}"
                )
            pages = self._pages(full if self.reserve and self.handoff is None else target)
            if pages > self.free_pages:
                return
            if from_resume:
                self.resume.pop(0)
            else:
                heapq.heappop(self.waiting)
            self.free_pages -= pages
            self.held[rid] = pages
            in_flight += 1
            if self.prefilled and not from_resume:
                self._joining.append((rid, target))
                continue
            prompt = _Prompt(rid, 0, target)
            self.prompts.append(prompt)
            chunk = min(target, budget)
            self._chunks.append((prompt, chunk))
            budget -= chunk

    def schedule(self, engine: Engine) -> Batch | None:
        now = engine.clock
        if not self.reserve:
            need = self._growing()
            if need > self.free_pages:
                need = self._preempt_for(need)
            self.free_pages -= need
        n_dec = len(self.decoding)
        self._decoding = n_dec
        budget = self.budget - n_dec
        self._chunks = []
        for prompt in self.prompts:
            if budget <= 0:
                break
            chunk = min(prompt.target - prompt.done, budget)
            self._chunks.append((prompt, chunk))
            budget -= chunk
        self._admit(now, budget, n_dec + len(self.prompts) + len(self._joining))
        if n_dec + len(self._chunks) == 0:
            if self.resume:
                raise AssertionError("a preempted request found no room in an empty cache")
            self._flush()
            if self.waiting and not self.decoding:
                engine.clock = max(now, self.waiting[0][0])
            return None
        p_tokens = sum(c for _, c in self._chunks)
        p_ctx = sum(p.done + c for p, c in self._chunks)
        ends = sum(1 for p, c in self._chunks if p.done + c == p.target)
        return Batch(
            prefill_tokens=p_tokens,
            prefill_seqs=len(self._chunks),
            prefill_context=p_ctx,
            decode_seqs=n_dec,
            decode_context=self.kv_sum + n_dec,
            emitting=n_dec + ends,
        )

    def _flush(self) -> None:
        for rid, kv in self._joining:
            self._join(rid, kv)
        self._joining = []

    def complete(self, engine: Engine, batch: Batch) -> None:
        now, led = engine.clock, self.ledger
        if self._decoding:
            self.tick += 1
            self.kv_sum += self._decoding
            for rid in self.ends.pop(self.tick, ()):
                seq = self.decoding.get(rid)
                if seq is None or seq[1] != self.tick:
                    continue  # preempted since, or back with another end
                led.finish_s[rid] = now
                led.generated[rid] = self.out[rid]
                self.free_pages += self._leave(rid)
                self.finished += 1
        self._flush()
        for prompt, chunk in self._chunks:
            prompt.done += chunk
            if prompt.done < prompt.target:
                continue
            self.prompts.remove(prompt)
            rid = prompt.rid
            led.generated[rid] += 1
            if np.isnan(led.first_token_s[rid]):
                led.first_token_s[rid] = now
            if led.generated[rid] >= self.out[rid] or self.handoff is not None:
                self.free_pages += int(self.held[rid])
                self.held[rid] = 0
                self.finished += 1
                if led.generated[rid] >= self.out[rid]:
                    led.finish_s[rid] = now
                elif self.handoff is not None:
                    self.handoff(rid, now)
            else:
                self._join(rid, prompt.target)
        self._chunks = []
