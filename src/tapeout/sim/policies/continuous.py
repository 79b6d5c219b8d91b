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
import numpy.typing as npt

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
        self.held = np.zeros(len(req), dtype=np.int64)  # KV pages a request holds before it decodes
        self.prefilled = prefilled
        self.handoff = handoff
        order = range(len(req)) if ids is None else ids
        self.waiting: list[tuple[float, int]] = [(float(req.arrival_s[i]), i) for i in order]
        heapq.heapify(self.waiting)
        self.expected = len(self.waiting)
        self.finished = 0
        self.resume: list[int] = []  # preempted, served before new arrivals (oldest first)
        self.prompts: list[_Prompt] = []
        # Decoding sequences, in admission order, as parallel arrays: id, tokens in the cache,
        # tokens still to generate, KV pages held (the ledger is written when they leave).
        self.r_id = np.empty(0, dtype=np.int64)
        self.r_kv = np.empty(0, dtype=np.int64)
        self.r_left = np.empty(0, dtype=np.int64)
        self.r_held = np.empty(0, dtype=np.int64)
        self.kv_sum = 0  # r_kv.sum(), kept as it changes
        self._chunks: list[tuple[_Prompt, int]] = []
        self._decoding = 0

    # ---- the stream ------------------------------------------------------------------------
    def inject(self, rid: int, at: float) -> None:
        """A request that becomes ready at `at` (after the policy created this engine)."""
        heapq.heappush(self.waiting, (at, rid))
        self.expected += 1

    @property
    def idle(self) -> bool:
        return not (self.prompts or self.resume or len(self.r_id))

    def next_engine(self) -> Engine | None:
        return None if self.finished >= self.expected and not self.waiting else self.engines[0]

    # ---- one iteration -----------------------------------------------------------------------
    def _pages(self, tokens: int) -> int:
        return -(-tokens // self.block)

    def _join(self, ids: list[int], kv: list[int]) -> None:
        """Sequences that start decoding, with the pages they hold."""
        r = np.asarray(ids, dtype=np.int64)
        self.r_id = np.concatenate([self.r_id, r])
        self.r_kv = np.concatenate([self.r_kv, np.asarray(kv, dtype=np.int64)])
        self.r_left = np.concatenate([self.r_left, self.out[r] - self.ledger.generated[r]])
        self.r_held = np.concatenate([self.r_held, self.held[r]])
        self.held[r] = 0
        self.kv_sum += sum(kv)

    def _keep(self, keep: npt.NDArray[np.bool_]) -> None:
        self.kv_sum -= int(self.r_kv[~keep].sum())
        self.r_id, self.r_kv = self.r_id[keep], self.r_kv[keep]
        self.r_left, self.r_held = self.r_left[keep], self.r_held[keep]

    def _preempt_for(self, need: int) -> int:
        """Free pages by preempting the newest decoding sequences; the pages the rest need."""
        while need > self.free_pages and len(self.r_id):
            rid = int(self.r_id[-1])
            self.ledger.generated[rid] = self.out[rid] - self.r_left[-1]
            self.free_pages += int(self.r_held[-1])
            self.kv_sum -= int(self.r_kv[-1])
            self.r_id, self.r_kv, self.r_left, self.r_held = (
                a[:-1] for a in (self.r_id, self.r_kv, self.r_left, self.r_held)
            )
            self.resume.append(rid)
            self.ledger.preemptions += 1
            need = int(np.count_nonzero(self.r_kv % self.block == 0))
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
                self._join([rid], [target])
                continue
            prompt = _Prompt(rid, 0, target)
            self.prompts.append(prompt)
            chunk = min(target, budget)
            self._chunks.append((prompt, chunk))
            budget -= chunk

    def schedule(self, engine: Engine) -> Batch | None:
        now = engine.clock
        if not self.reserve:
            grow = self.r_kv % self.block == 0
            need = int(np.count_nonzero(grow))
            if need > self.free_pages:
                need = self._preempt_for(need)
                grow = self.r_kv % self.block == 0
            self.free_pages -= need
            self.r_held[grow] += 1
        n_dec = len(self.r_id)
        self._decoding = n_dec
        budget = self.budget - n_dec
        self._chunks = []
        for prompt in self.prompts:
            if budget <= 0:
                break
            chunk = min(prompt.target - prompt.done, budget)
            self._chunks.append((prompt, chunk))
            budget -= chunk
        self._admit(now, budget, n_dec + len(self.prompts))
        if n_dec + len(self._chunks) == 0:
            if self.resume:
                raise AssertionError("a preempted request found no room in an empty cache")
            if self.waiting:
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

    def complete(self, engine: Engine, batch: Batch) -> None:
        now, led = engine.clock, self.ledger
        n_dec = self._decoding
        if n_dec:
            self.r_kv[:n_dec] += 1
            self.kv_sum += n_dec
            left = self.r_left[:n_dec]
            left -= 1
            done = left <= 0
            if done.any():
                gone = self.r_id[:n_dec][done]
                led.finish_s[gone] = now
                led.generated[gone] = self.out[gone] - left[done]
                self.free_pages += int(self.r_held[:n_dec][done].sum())
                self.finished += len(gone)
                keep = np.ones(len(self.r_id), dtype=bool)
                keep[:n_dec] = ~done
                self._keep(keep)
        new_ids: list[int] = []
        new_kv: list[int] = []
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
                new_ids.append(rid)
                new_kv.append(prompt.target)
        if new_ids:
            self._join(new_ids, new_kv)
        self._chunks = []
