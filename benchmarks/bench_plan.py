"""Speed of the fleet planner: 10 candidate chips x 3 workloads (serving, recsys, training).

Run: `python benchmarks/bench_plan.py [--workers N]` (default: up to 2). Reports the wall time
of one cold plan (no cached capacities); the target is under 5 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import time

from tapeout.plan import fleet, parse_demand

CANDIDATES = ["h20", "h100-sxm", "h200-sxm", "b200", "mi300x", "gaudi3", "a100-sxm-80gb", "h800-sxm",
              "tpu-v5p", "ascend-910b"]  # fmt: skip
DEMAND = {
    "candidates": [{"hardware": c} for c in CANDIDATES],
    "demands": [
        {"name": "chat", "kind": "serving", "model": "llama-3.1-70b", "precision": "fp8", "input_len": 1000,
         "output_len": 300, "ttft_limit_s": 2.0, "tpot_limit_s": 0.05, "tokens_per_s": 5e6},
        {"name": "ranking", "kind": "recsys", "model": "dlrm-v2", "qps": 2e6, "latency_limit_s": 0.01,
         "pairs_per_sample": 100},
        {"name": "pretrain", "kind": "training", "model": "llama-3.1-8b", "tokens": 1e12,
         "deadline_days": 30, "seq_len": 8192, "global_batch": 512},
    ],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    workers = parser.parse_args().workers
    demand = parse_demand(DEMAND, "bench")
    t = time.perf_counter()
    out = fleet.plan(demand, workers=workers)
    total = time.perf_counter() - t
    for d in out.as_dict()["demands"]:
        failed = [a["candidate"] for a in d["alternatives"] if "error" in a]
        print(
            f"{d['demand']}: {d['chips']:,} chips, ${d['tco_usd']:,.0f}; no capacity on {', '.join(failed) or '-'}"
        )
    print(f"plan of {len(CANDIDATES)} candidates x {len(demand.demands)} workloads on {workers} worker(s): "
          f"{total:.2f} s (target < 5 s); total TCO ${out.total_tco_usd:,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
