"""Running the capacity estimates: in this process, or over worker processes (forked, so each
starts with the catalogs loaded), the slowest kinds first so that the workers finish together."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from tapeout.errors import TapeoutError
from tapeout.plan.capacity import Capacity, capacity
from tapeout.plan.demand import Demand


def _capacity_or_error(task: tuple[Demand, str, bool]) -> Capacity | str:
    try:
        return capacity(*task)
    except TapeoutError as exc:
        return str(exc)


def capacities(
    tasks: list[tuple[Demand, str]], workers: int = 1, *, check: bool = True
) -> list[Capacity | str]:
    """`capacity` of every (demand, chip id), or the reason it fails; over `workers` processes
    (forked, so each starts with the catalogs loaded) when there is more than one task."""
    jobs = [(d, chip, check) for d, chip in tasks]
    if workers <= 1 or len(jobs) < 2:
        return [_capacity_or_error(job) for job in jobs]
    # The slowest kinds first (serving, then training), so that the workers finish together.
    slow = {"serving": 0, "training": 1, "recsys": 2}
    order = sorted(range(len(jobs)), key=lambda i: slow[jobs[i][0].kind])
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
        done = list(pool.map(_capacity_or_error, [jobs[i] for i in order]))
    out: list[Capacity | str] = [""] * len(jobs)
    for i, result in zip(order, done, strict=True):
        out[i] = result
    return out
