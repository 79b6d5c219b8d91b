"""Search strategies: which designs to evaluate next. Kept apart from the model: a strategy asks
for batches of designs (knob values) and is told their results; it never costs anything itself.

- `grid`: every combination of the knobs' grid values, in order (a space whose grid exceeds the
  budget is refused: a truncated grid would only vary the last knobs);
- `random`: designs drawn uniformly (log-uniformly for `log` ranges) with a seeded generator,
  each design once;
- `nsga2`: NSGA-II (Deb et al. 2002) from Optuna, driven by ask and tell a generation at a time,
  with the constraints' violation as Optuna's constraint (feasible designs dominate).

All are deterministic for a space and a seed, whatever executes the evaluations.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from tapeout.errors import TapeoutError
from tapeout.explore.evaluate import Result
from tapeout.explore.knobs import Knob, Value
from tapeout.explore.space import Space

Point = dict[str, Value]
DEFAULT_BUDGET = 1000
MAX_GRID = 10_000_000  # designs a grid may list without a budget
DRAWS_PER_DESIGN = 20  # random draws tried per distinct design before the space is taken as exhausted
INSTALL = "the nsga2 strategy needs Optuna: pip install 'tapeout[explore]'"


def key(space: Space, point: Mapping[str, Value]) -> str:
    """A design's identity: its knob values in the space's order, as JSON."""
    return json.dumps([point[k.name] for k in space.knobs])


class Strategy(Protocol):
    def ask(self, n: int) -> list[Point]: ...  # up to n designs; none when done
    def tell(self, points: Sequence[Point], results: Sequence[Result]) -> None: ...


def grid_size(knobs: Sequence[Knob]) -> int:
    return math.prod(len(k.grid()) for k in knobs)


class Grid:
    def __init__(self, space: Space, budget: int | None) -> None:
        size = grid_size(space.knobs)
        if budget is not None and budget < size:
            raise TapeoutError(
                f"the grid of {size:,} designs is over the budget of {budget:,}; raise the budget or use the "
                "random or nsga2 strategy"
            )
        if size > MAX_GRID:
            raise TapeoutError(
                f"the grid holds {size:,} designs, over {MAX_GRID:,}: use random or nsga2 with a budget"
            )
        names = space.names
        self._designs = (
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(k.grid() for k in space.knobs))
        )

    def ask(self, n: int) -> list[Point]:
        return list(itertools.islice(self._designs, n))

    def tell(self, points: Sequence[Point], results: Sequence[Result]) -> None:
        return None


class Random:
    def __init__(self, space: Space, budget: int | None, seed: int) -> None:
        self._space, self._left = space, budget or DEFAULT_BUDGET
        self._rng = np.random.default_rng(seed)
        self._seen: set[tuple[Value, ...]] = set()
        self._samplers = [k.sampler() for k in space.knobs]
        discrete = all(k.choices or k.step is not None for k in space.knobs)
        self._size = grid_size(space.knobs) if discrete else None

    def ask(self, n: int) -> list[Point]:
        out: list[Point] = []
        draws = DRAWS_PER_DESIGN * n
        knobs, rng, samplers = self._space.knobs, self._rng, self._samplers
        while len(out) < min(n, self._left) and draws > 0 and len(self._seen) != self._size:
            draws -= 1
            values = tuple(draw(rng) for draw in samplers)
            if values not in self._seen:
                self._seen.add(values)
                out.append({k.name: v for k, v in zip(knobs, values, strict=True)})
        self._left -= len(out)
        return out

    def tell(self, points: Sequence[Point], results: Sequence[Result]) -> None:
        return None


class Nsga2:
    """Optuna's NSGA-II sampler through ask and tell: each generation is asked whole, evaluated
    (by whatever executor) and told back in the order it was asked."""

    def __init__(self, space: Space, budget: int | None, seed: int) -> None:
        try:
            optuna: Any = importlib.import_module("optuna")
        except ImportError as exc:
            raise TapeoutError(f"{INSTALL} ({exc})") from exc
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._fail = optuna.trial.TrialState.FAIL
        self._space, self._left = space, budget or DEFAULT_BUDGET
        self._population = space.search.population
        self._sampler = sampler = _sampler(optuna, space, self._population, seed)
        directions = ["maximize" if o.direction == "max" else "minimize" for o in space.objectives]
        self._study = optuna.create_study(directions=directions, sampler=sampler)
        self._trials: list[Any] = []

    def ask(self, n: int) -> list[Point]:
        """The next generation (or what the budget leaves of it); `n` does not cut a generation."""
        count = min(self._population, self._left)
        self._left -= count
        self._trials = [self._study.ask() for _ in range(count)]
        return [{k.name: _suggest(t, k) for k in self._space.knobs} for t in self._trials]

    def tell(self, points: Sequence[Point], results: Sequence[Result]) -> None:
        for trial, r in zip(self._trials, results, strict=True):
            values = [r.metrics.get(o.metric, math.nan) for o in self._space.objectives]
            if not all(math.isfinite(v) for v in values):
                self._study.tell(trial, state=self._fail)
                continue
            with warnings.catch_warnings():  # a constraint set twice warns; ours is set once
                warnings.simplefilter("ignore")
                trial.set_constraint("violation", r.violation if not r.feasible else 0.0)
            self._study.tell(trial, values)
            self._sampler.completed = True


def _sampler(optuna: Any, space: Space, population: int, seed: int) -> Any:
    """Optuna's NSGA-II sampler, with two of its steps kept rather than redone for every trial
    (both grow with the study, so a long search spent most of its time there); it asks and
    selects exactly as the stock sampler (`tests/test_explore.py`).

    - The search space: the stock sampler infers it for every trial as the intersection of the
      finished trials' distributions (deep copies of them all). Every trial here asks every knob
      with the same distribution, so that intersection is the knobs' distributions, sorted by
      name, once a trial has finished. Knobs of one value are left out, as the stock sampler
      leaves them (sampled independently).
    - A generation's parents, selected once and kept."""
    distributions = {k.name: _distribution(optuna, k) for k in space.knobs}
    relative = {name: d for name, d in sorted(distributions.items()) if not d.single()}  # by name, as Optuna

    class FixedSpace(optuna.samplers.NSGAIISampler):  # type: ignore[misc]
        completed = False  # set when a trial is told its values (`Nsga2.tell`)

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._parents: dict[int, list[Any]] = {}

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            # Before any trial completes, the stock sampler's intersection is empty.
            return dict(relative) if self.completed else {}

        def get_parent_population(self, study: Any, generation: int) -> list[Any]:
            # The stock sampler selects a generation's parents once, then finds them again among
            # all the study's trials for every child; finished trials do not change, so keep them.
            got = self._parents.get(generation)
            if got is None:  # selected now, in the selection's order; found again in trial order
                got = super().get_parent_population(study, generation)
                self._parents[generation] = sorted(got, key=lambda t: t.number)
            return got

    return FixedSpace(population_size=population, seed=seed)


def _distribution(optuna: Any, k: Knob) -> Any:
    """The Optuna distribution a knob is asked with (`_suggest`)."""
    d = optuna.distributions
    if k.choices:
        return d.CategoricalDistribution(list(range(len(k.choices))))
    if k.spec.kind == "int":
        return d.IntDistribution(
            int(k.low), int(k.high), step=int(k.step) if k.step is not None else 1, log=k.log
        )
    if k.step is not None:
        return d.IntDistribution(0, len(k.grid()) - 1)
    return d.FloatDistribution(k.low, k.high, log=k.log)


def _suggest(trial: Any, k: Knob) -> Value:
    """A knob's value from an Optuna trial, in the knob's own grid or range."""
    if k.choices:
        return k.choices[int(trial.suggest_categorical(k.name, list(range(len(k.choices)))))]
    if k.spec.kind == "int":
        step = int(k.step) if k.step is not None else 1
        return int(trial.suggest_int(k.name, int(k.low), int(k.high), step=step, log=k.log))
    if k.step is not None:
        values = k.grid()
        return values[int(trial.suggest_int(k.name, 0, len(values) - 1))]
    return round(float(trial.suggest_float(k.name, k.low, k.high, log=k.log)), 12)


def strategy(space: Space) -> Strategy:
    s = space.search
    if s.strategy == "grid":
        return Grid(space, s.budget)
    if s.strategy == "random":
        return Random(space, s.budget, s.seed)
    return Nsga2(space, s.budget, s.seed)
