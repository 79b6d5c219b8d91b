"""Plan search for a training step: the fastest plan that fits, within a budget.

The search enumerates tensor parallelism inside a scale-up domain (heads permitting), context
parallelism over powers of two, pipeline stages, interleaving, micro-batch, expert parallelism,
recomputation and ZeRO (over all data-parallel ranks, or hybrid: over the ranks of one scale-up
domain, replicated across domains); data parallelism takes the remaining chips. Each candidate is checked
for consistency and memory first (cheap), and only then timed by `train_step`; layer costs are
cached by their shape, so a timed plan costs tens of microseconds once its shapes are known.
`tp_overlap` and `ep_overlap` say whether the software overlaps tensor-parallel and expert
communication (then every plan with tp > 1, or ep > 1, uses it) and `attention` which attention
kernel it has (unfused: no context parallelism). `fixed` pins plan fields (`{"tp": 8}`: only
plans with tp 8); pinned candidates alone count. The search stops after `budget` candidates and
reports how many it tried, how many fit, and why the others failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tapeout.errors import DoesNotFit, TapeoutError
from tapeout.parallel.fields import plan_fields
from tapeout.parallel.training import RECOMPUTE, AttentionKernel, TrainingPlan
from tapeout.perf.system import System
from tapeout.precision import Precision
from tapeout.sim.train import TrainingResult, plan_memory, train_step
from tapeout.workloads.llm import LLMConfig

POWERS = (1, 2, 4, 8, 16, 32, 64, 128)
PINNABLE = tuple(f.name for f in plan_fields(TrainingPlan, searched=True))
VPP = (1, 2, 3, 4, 6, 8)
MICRO_BATCHES = (1, 2, 4, 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    best: TrainingResult
    tried: int
    feasible: int
    failures: dict[str, int] = field(default_factory=dict)
    exhausted: bool = True  # every candidate was tried within the budget


def _candidates(
    model: LLMConfig,
    system: System,
    seq_len: int,
    precision: Precision,
    tp_overlap: bool,
    ep_overlap: bool,
    attention: AttentionKernel,
) -> Iterator[TrainingPlan]:
    chips, domain = system.chips, max(1, system.scale_up_domain)
    tps = [t for t in POWERS if t <= domain and model.num_attention_heads % t == 0]
    cps = [c for c in POWERS if c == 1 or (seq_len % (2 * c) == 0 and attention == "flash")]
    eps = [e for e in POWERS if e == 1 or (model.is_moe and model.experts % e == 0)]
    for tp in tps:
        for cp in cps:
            for pp in range(1, model.num_hidden_layers + 1):
                if chips % (tp * cp * pp):
                    continue
                # ZeRO over all data-parallel ranks, or hybrid: over those inside one scale-up domain.
                holders, inside = chips // (tp * pp), domain // tp
                zeros: list[tuple[int, int | None]] = [(0, None), (1, None), (3, None)]
                if 1 < inside < holders and holders % inside == 0:
                    zeros += [(1, inside), (3, inside)]
                for vpp in VPP if pp > 1 else (1,):
                    if pp * vpp > model.num_hidden_layers:
                        break
                    for ep in eps:
                        for mb in MICRO_BATCHES:
                            for recompute in RECOMPUTE:
                                for zero, shard in zeros:
                                    yield TrainingPlan(
                                        tp=tp, pp=pp, cp=cp, ep=ep, vpp=vpp, micro_batch=mb,
                                        sequence_parallel=tp > 1, tp_overlap=tp_overlap and tp > 1,
                                        ep_overlap=ep_overlap and ep > 1, attention=attention, recompute=recompute, zero=zero,
                                        zero_shard=shard, precision=precision,
                                    )  # fmt: skip


def _value(plan: TrainingPlan, chips: int, name: str) -> object:
    return chips // plan.model_chips if name == "dp" else getattr(plan, name)


def _reason(exc: TapeoutError, chip: str) -> str:
    """What a candidate failed on: memory, or the plan field its check names."""
    if isinstance(exc, DoesNotFit):
        return f"memory: does not fit on {chip}"
    return str(exc).split(":", 1)[0]


def search(
    model: LLMConfig,
    system: System,
    *,
    seq_len: int,
    global_batch: int,
    precision: Precision = "bf16",
    budget: int = 200_000,
    tp_overlap: bool = False,
    ep_overlap: bool = False,
    attention: AttentionKernel = "flash",
    fixed: Mapping[str, object] | None = None,
) -> SearchResult:
    """The fastest plan that fits, among at most `budget` candidates.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.workloads.models import get_model
    >>> r = search(get_model("llama-3.1-8b").config, System.of(get_chip("h100-sxm"), 8), seq_len=4096, global_batch=64)
    >>> r.best.plan.tp * r.best.plan.pp * r.best.plan.cp * r.best.dp, r.feasible > 0
    (8, True)
    """
    if budget < 1:
        raise TapeoutError(f"field 'budget': must be >= 1 plans, got {budget}")
    pins = dict(fixed or {})
    for name in pins:
        if name not in PINNABLE:
            raise TapeoutError(
                f"field '{name}': not a plan choice the search makes; it makes {', '.join(PINNABLE)}"
            )
    system.chip.require_formats({"precision": precision})
    best: TrainingResult | None = None
    tried = feasible = 0
    failures: Counter[str] = Counter()
    exhausted = True
    for plan in _candidates(model, system, seq_len, precision, tp_overlap, ep_overlap, attention):
        if pins and any(_value(plan, system.chips, k) != v for k, v in pins.items()):
            continue
        if tried >= budget:
            exhausted = False
            break
        tried += 1
        try:  # memory first (cheap), then the step
            if plan_memory(model, system, plan, seq_len=seq_len, global_batch=global_batch).free_bytes < 0:
                failures[f"memory: does not fit on {system.chip.id}"] += 1
                continue
            result = train_step(
                model, system, plan, seq_len=seq_len, global_batch=global_batch, check_memory=False
            )
        except TapeoutError as exc:
            failures[_reason(exc, system.chip.id)] += 1
            continue
        feasible += 1
        if best is None or result.step_time_s < best.step_time_s:
            best = result
    if best is None:
        summary = (
            "; ".join(f"{n} x {why}" for why, n in failures.most_common(4)) or "none is among the candidates"
        )
        pinned = "".join(f", {k} {v}" for k, v in pins.items())
        raise TapeoutError(
            f"no plan fits {model.num_hidden_layers}-layer model on {system.chips} x {system.chip.id} "
            f"(seq_len {seq_len}, global_batch {global_batch}{pinned}): tried {tried} plans; they failed on {summary}"
        )
    return SearchResult(
        best=best, tried=tried, feasible=feasible, failures=dict(failures), exhausted=exhausted
    )
