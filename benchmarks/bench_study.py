"""Speed and size of the flagship study, cold: a fresh process, no cached capacities.

Run: `OMP_NUM_THREADS=1 python benchmarks/bench_study.py [--json]`. Reports the seconds of each
step (imports, fleet plan, validation, curves, rooflines, die, software with the compiler), the
whole run and the page's size; nothing is asserted (shared machines are noisy). The target is
under 60 s and under 8 MB (issue 19).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
STARTED = time.perf_counter()

from tapeout.report import render_study  # noqa: E402
from tapeout.study import load_study, run_study  # noqa: E402


def main() -> dict[str, float]:
    steps: list[tuple[str, float]] = [("imports", STARTED), ("loading the study", time.perf_counter())]
    result = run_study(load_study(), progress=lambda what: steps.append((what, time.perf_counter())))
    steps.append(("page", time.perf_counter()))
    page = render_study(result)
    done = time.perf_counter()
    out = {name: end - start for (name, start), (_, end) in zip(steps, [*steps[1:], ("", done)], strict=True)}
    out["whole_s"] = done - STARTED
    out["page_mb"] = len(page.encode()) / 1e6
    return out


if __name__ == "__main__":
    figures = main()
    if "--json" in sys.argv:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:>32}: {value:8.2f}")
