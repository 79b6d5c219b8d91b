"""`run_study`: one study file to its result, section by section, each from the module that owns
its question (the fleet planner, the cost model, the simulators, the compiler, the validation)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import tapeout
from tapeout.errors import TapeoutError
from tapeout.plan.fleet import plan
from tapeout.study.answer import answer
from tapeout.study.confidence import band_errors, cases, confidence
from tapeout.study.result import StudyResult
from tapeout.study.roofline import roofline
from tapeout.study.schema import Study
from tapeout.study.silicon import die, pareto
from tapeout.study.software import software
from tapeout.study.workloads import workloads

PLAN_WORKERS = 2  # processes for the plan's capacities: the development machine's cores


def run_study(
    study: Study, *, workers: int | None = None, progress: Callable[[str], None] | None = None
) -> StudyResult:
    """Run every part of a study and return its result (sections in page order).

    >>> from tapeout.study import load_study
    >>> result = run_study(load_study())  # doctest: +SKIP
    >>> result.headline.text  # doctest: +SKIP
    """
    started = time.perf_counter()

    def step(what: str) -> None:
        if progress is not None:
            progress(what)

    step("fleet plan")
    try:
        fleet = plan(study.demand, workers=workers or min(PLAN_WORKERS, os.cpu_count() or 1))
    except TapeoutError as exc:
        raise TapeoutError(f"{study.origin}: {exc}") from None
    step("validation cases")
    rows = cases()
    errors = band_errors(rows, study.error_quantile)
    the_answer, headline, ours_option, baseline = answer(study, fleet, errors)
    step("workloads and latency curves")
    per_workload = workloads(fleet, study.ours)
    step("rooflines")
    roofs = roofline(fleet)
    step("die and design space")
    silicon, costs = die(fleet, study.ours)
    space = pareto(study.exploration)
    step("software")
    chips = {p.key: p.chip.id for p in fleet.candidates if p.key in study.ours}
    soft = software(study.compile, fleet, ours_option, baseline, chips)
    step("how sure we are")
    sure = confidence(rows, errors, study.error_quantile)
    return StudyResult(
        name=study.name, notes=study.notes, origin=study.origin, version=tapeout.__version__,
        seconds=time.perf_counter() - started, headline=headline,
        sections=(the_answer, per_workload, roofs, silicon, space, soft, sure),
        data={"plan": fleet.as_dict(), "cost": costs, "validation_band": errors},
    )  # fmt: skip
