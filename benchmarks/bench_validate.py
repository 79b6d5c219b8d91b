"""Speed of the public validation and of a server-scenario search.

Targets (issue: one op graph): the whole public validation in < 3 s; one server case (llama-3.1-405b
on 8 x H200 at a p99 TTFT of 6 s and TPOT of 175 ms) in < 2 s. A server case is a search over
the request rate: the steady-state capacity model (`sim.capacity`) gives the rate, and full
simulations step out from it until the limits flip, then bisect to 1.25 %.

Each figure is timed in a fresh process (what `tapeout validate` pays: every cache starts empty),
median of the repeats. Run: `OMP_NUM_THREADS=1 python benchmarks/bench_validate.py [--json]`.
Nothing is asserted (shared machines are noisy).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPEATS = 3

_WHOLE = """
import json, pathlib, time, tapeout
from tapeout import cases, validate
path = pathlib.Path(tapeout.__file__).parent / "data" / "public_cases.yaml"
t0 = time.perf_counter()
all_cases = cases.load_cases(path)
times = {}
for case in all_cases:
    t = time.perf_counter()
    result = validate.predict(case)
    times[case.id] = (time.perf_counter() - t, result.predicted)
print(json.dumps({"seconds": time.perf_counter() - t0, "cases": len(all_cases), "per_case": times}))
"""

_SERVER_405B = """
import json, time
from tapeout.hardware import get_chip
from tapeout.parallel.inference import InferencePlan
from tapeout.perf.system import System
from tapeout.search.serving import server
from tapeout.sim.llm import Replica
from tapeout.workloads.models import get_model
t0 = time.perf_counter()
plan = InferencePlan(tp=8, precision="fp8")
r = Replica.of(get_model("llama-3.1-405b").config, System.of(get_chip("h200-sxm"), 8), plan)
res = server(r, 2048.0, 512.0, ttft_limit_s=6.0, tpot_limit_s=0.175)
print(json.dumps({"seconds": time.perf_counter() - t0, "tokens_per_s": res.tokens_per_s, "batch": res.batch}))
"""


def _child(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_whole() -> dict[str, object]:
    """Every public case, and the slowest of them (the server searches)."""
    runs = [_child(_WHOLE) for _ in range(REPEATS)]
    per_case: dict[str, list[float]] = {}
    for run in runs:
        for case_id, (seconds, _) in run["per_case"].items():  # type: ignore[attr-defined]
            per_case.setdefault(case_id, []).append(seconds)
    slowest = sorted(per_case, key=lambda c: -statistics.median(per_case[c]))[:3]
    return {
        "seconds": statistics.median(float(r["seconds"]) for r in runs),  # type: ignore[arg-type]
        "cases": runs[0]["cases"],
        "slowest": {c: statistics.median(per_case[c]) for c in slowest},
    }


def bench_server_405b() -> dict[str, object]:
    runs = [_child(_SERVER_405B) for _ in range(REPEATS)]
    return {
        "seconds": statistics.median(float(r["seconds"]) for r in runs),  # type: ignore[arg-type]
        "tokens_per_s": runs[0]["tokens_per_s"],
        "batch": runs[0]["batch"],
    }


def main() -> None:
    report = {"public_validation": bench_whole(), "server_llama31_405b_8xh200": bench_server_405b()}
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
        return
    for name, values in report.items():
        print(name)
        for k, v in values.items():
            if isinstance(v, dict):
                for case, s in v.items():
                    print(f"  {k}: {case:50s} {s:.3g} s")
            else:
                print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")


if __name__ == "__main__":
    main()
