"""A sweep from start to end: the strategy asks for designs, an executor evaluates the new ones in
batches, each finished batch goes to the store, and the strategy is told the results. A sweep
that was killed resumes from its store: stored designs are never evaluated again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.explore.evaluate import Result
from tapeout.explore.executors import executor
from tapeout.explore.pareto import front
from tapeout.explore.search import key, strategy
from tapeout.explore.silicon import Bound
from tapeout.explore.space import Objective, Space, load_space
from tapeout.explore.store import Row, Store, model_version

ROUND_CHUNKS = 4  # batches per worker asked of a grid or random strategy at a time


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """What a progress display shows: designs done (this run and before), the rate of this run
    and the best value of the first objective so far."""

    done: int
    evaluated: int
    budget: int | None
    elapsed_s: float
    best: float | None
    objective: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """A sweep's designs (in the order asked), its objectives and its front."""

    folder: Path
    rows: list[Row]
    objectives: tuple[Objective, ...]
    evaluated: int = 0  # designs this run evaluated (the rest came from the store)
    elapsed_s: float = 0.0

    @property
    def front(self) -> list[Row]:
        """The feasible designs no other feasible design dominates on the objectives."""
        feasible = [r for r in self.rows if r.result.feasible]
        if not feasible:
            return []
        values = np.array(
            [[r.result.metrics.get(o.metric, math.nan) for o in self.objectives] for r in feasible]
        )
        return [feasible[i] for i in front(values, [o.direction for o in self.objectives])]

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.folder),
            "objectives": {o.metric: o.direction for o in self.objectives},
            "designs": [r.result.as_dict() for r in self.rows],
            "front": [r.result.as_dict() for r in self.front],
        }


def explore(
    space: Space | str | Path,
    *,
    out: str | Path | None = None,
    executor_kind: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    budget: int | None = None,
    seed: int | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Sweep:
    """Sweep a space (a `Space` or a space file) and store every design in `out` (default: a
    folder beside the space file named after it). The same space and seed give the same designs
    and results on any executor.

    >>> sweep = explore("examples/explore-small.yaml", budget=8, workers=1)  # doctest: +SKIP
    """
    overrides = {k: v for k, v in (("budget", budget), ("seed", seed)) if v is not None}
    if not isinstance(space, Space):
        space = load_space(space, **overrides)
    elif overrides:
        raise TapeoutError("budget and seed override a space file's; set them in the Space's search instead")
    folder = Path(out) if out is not None else Path(space.origin).with_suffix(".explore")
    store = Store.open(folder, space, model_version())
    known = {r.key: r for r in store.rows()}
    ask = strategy(space)
    started, evaluated, order = time.perf_counter(), 0, 0
    best = _best(space.objectives[0], list(known.values()), None)
    ex = executor(executor_kind, space, workers, ray_address)
    try:
        batch = space.search.batch
        while points := ask.ask(batch * ex.workers * ROUND_CHUNKS):
            new: list[tuple[int, str, dict[str, Any]]] = []
            asked: set[str] = set()
            keys = [key(space, p) for p in points]
            for p, k in zip(points, keys, strict=True):
                if k not in known and k not in asked:
                    new.append((order, k, p))
                    asked.add(k)
                order += 1
            chunks = [new[i : i + batch] for i in range(0, len(new), batch)]
            for i, results in ex.run([[p for _, _, p in c] for c in chunks]):
                rows = [
                    Row(index=o, key=k, result=r) for (o, k, _), r in zip(chunks[i], results, strict=True)
                ]
                store.write(rows)
                known.update((r.key, r) for r in rows)
                evaluated += len(rows)
                best = _best(space.objectives[0], rows, best)
                if progress is not None:
                    progress(Progress(done=len(known), evaluated=evaluated, budget=space.search.budget,
                                      elapsed_s=time.perf_counter() - started, best=best,
                                      objective=space.objectives[0].metric))  # fmt: skip
            ask.tell(points, [known[k].result for k in keys])
    finally:
        ex.close()
    rows = sorted(known.values(), key=lambda r: r.index)
    sweep = Sweep(folder=folder, rows=rows, objectives=space.objectives, evaluated=evaluated,
                  elapsed_s=time.perf_counter() - started)  # fmt: skip
    if rows and not any(r.result.feasible for r in rows):
        raise TapeoutError(no_design(rows, space.bounds, folder))
    return sweep


def _best(o: Objective, rows: Sequence[Row], best: float | None) -> float | None:
    """The best value of objective `o` over `best` and the feasible designs of `rows`."""
    values = [r.result.metrics.get(o.metric, math.nan) for r in rows if r.result.feasible]
    finite = [v for v in values if math.isfinite(v)] + ([best] if best is not None else [])
    if not finite:
        return None
    return max(finite) if o.direction == "max" else min(finite)


def no_design(rows: Sequence[Row], bounds: Sequence[Bound], folder: Path) -> str:
    """Why no design is feasible: each constraint no design meets with the design closest to it,
    else the commonest reason."""
    parts = []
    for b in bounds:
        scored = [(b.violation(r.result.metrics[b.metric]), r) for r in rows if b.metric in r.result.metrics]
        if scored and all(v > 0 for v, _ in scored):
            _, r = min(scored, key=lambda x: x[0])
            parts.append(f"no design meets {b}; the closest, {_knobs(r.result)}, has {b.metric} "
                         f"{r.result.metrics[b.metric]:,.4g}")  # fmt: skip
    if not parts:
        reasons: dict[str, int] = {}
        for r in rows:
            reasons[r.result.reason] = reasons.get(r.result.reason, 0) + 1
        top = max(reasons, key=lambda k: reasons[k])
        parts.append(
            f"none of the {len(rows):,} designs is feasible; the commonest reason ({reasons[top]:,}): {top}"
        )
    return "; ".join(parts) + f" (every design is stored in {folder})"


def _knobs(r: Result) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in r.knobs.items()) + "}"


def show(folder: str | Path) -> Sweep:
    """Read a store back: its designs, and the front over the objectives of its space."""
    path = Path(folder)
    if not (path / "manifest.json").is_file():
        raise TapeoutError(f"{path}: not a results store (no manifest.json)")
    manifest = Store.read_manifest(path)
    raw = manifest.get("objectives")
    if not isinstance(raw, dict) or not all(d in ("min", "max") for d in raw.values()):
        raise TapeoutError(f"results store {path}: manifest.json has no objectives")
    objectives = tuple(Objective(metric=m, direction=d) for m, d in raw.items())
    return Sweep(folder=path, rows=Store(path, manifest).rows(), objectives=objectives)
