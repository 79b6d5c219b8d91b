"""Speed of the recommendation-model estimates.

Targets (issue: recommendation models): a full dlrm-v2 inference estimate in < 5 ms; the sharding
planner for 26 tables over 64 chips in < 1 s. Run: `OMP_NUM_THREADS=1 python benchmarks/bench_recsys.py
[--json]`. Medians of repeats; nothing is asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tapeout.hardware import get_chip
from tapeout.parallel.recsys import RecsysPlan, place
from tapeout.perf.attention import _attention_cost
from tapeout.perf.matmul import _matmul_cost
from tapeout.perf.system import System
from tapeout.sim import recsys
from tapeout.workloads import dlrm
from tapeout.workloads.models import get_model

DLRM = get_model("dlrm-v2").config


def bench_inference() -> dict[str, float]:
    """Build the system (sharding, hot rows) and estimate offline throughput: cold and warm caches."""
    system = System.of(get_chip("h100-sxm"), 8)
    cold, warm = [], []
    for i in range(20):
        _matmul_cost.cache_clear()
        _attention_cost.cache_clear()
        dlrm._hit_rates.cache_clear()
        recsys._template.cache_clear()
        t0 = time.perf_counter()
        rs = recsys.RecsysSystem.of(DLRM, system, RecsysPlan(precision="int8"))
        recsys.offline(rs, pairs_per_sample=270, batch_pairs=60000 + i)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        recsys.offline(
            recsys.RecsysSystem.of(DLRM, system, RecsysPlan(precision="int8")),
            pairs_per_sample=270,
            batch_pairs=60000 + i,
        )
        warm.append(time.perf_counter() - t0)
    return {"cold_ms": 1e3 * statistics.median(cold), "warm_ms": 1e3 * statistics.median(warm)}


def bench_planner() -> dict[str, float]:
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        place(DLRM, 64, 10e9, "fp16", "table")
        times.append(time.perf_counter() - t0)
    return {"ms": 1e3 * statistics.median(times)}


def main() -> None:
    report = {"dlrm_v2_inference_estimate": bench_inference(), "planner_26_tables_64_chips": bench_planner()}
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
        return
    for name, values in report.items():
        print(name, " ".join(f"{k} {v:.3g}" for k, v in values.items()))


if __name__ == "__main__":
    main()
