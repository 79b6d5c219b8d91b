"""Speed and memory of the serving simulator, and a peer on the same case.

Targets (issue: LLM inference and serving): 10,000 requests of llama-2-70b on 8 x H100 simulated in
< 2 s on one core; one iteration-latency evaluation < 100 us; 100,000 requests under 500 MB.
The peer is llm-analysis from PyPI (`pip install llm-analysis==0.2.2`), run on the MLPerf v4.1
llama2-70b offline case of 8 x H100 beside tapeout, both against the measured value.

Run: `OMP_NUM_THREADS=1 python benchmarks/bench_serve.py [--json]`. Medians of repeats; nothing is
asserted (shared machines are noisy).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tapeout.hardware import get_chip
from tapeout.parallel.inference import InferencePlan
from tapeout.perf.attention import _attention_cost
from tapeout.perf.matmul import _matmul_cost
from tapeout.perf.system import System
from tapeout.sim import llm, scenarios
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.serve import simulate
from tapeout.workloads.models import get_model

sys.path.insert(0, str(Path(__file__).parent))
from peer_llm_analysis import PEER_REQUIREMENT, peer_available, run_llm_analysis

FP8 = InferencePlan(tp=2, precision="fp8")
MEASURED = 24524.9  # MLPerf Inference v4.1, DGX-H100, llama2-70b-99 Offline (public case)
IN_LEN = Lengths(kind="lognormal", mean=222.3, sigma=0.8)
OUT_LEN = Lengths(kind="lognormal", mean=290.3, sigma=0.8)


def _replica(plan: InferencePlan) -> Replica:
    return Replica.of(get_model("llama-2-70b").config, System.of(get_chip("h100-sxm"), plan.chips), plan)


def bench_10k() -> dict[str, float]:
    """10,000 Poisson requests on one tp-8 replica of 8 x H100 at about 85 % of its capacity."""
    plan = InferencePlan(tp=8, precision="fp8")
    times = []
    for _ in range(3):
        llm._COSTS.clear()  # each run starts with the replica's own costs empty
        replica = _replica(plan)
        reqs = Requests.poisson(10_000, 32.0, IN_LEN, OUT_LEN)
        t0 = time.perf_counter()
        res = simulate(replica, reqs, max_batch=512)
        times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times),
        "iterations": res.iterations,
        "tokens_per_s": res.tokens_per_s,
    }


def bench_iteration() -> dict[str, float]:
    """One iteration: a mixed batch of decodes and a prefill chunk, cold (every cache empty) and
    warm (the token count seen before, as in a running simulation)."""
    cold = []
    for i in range(200):
        llm._COSTS.clear()
        replica = _replica(FP8)
        _matmul_cost.cache_clear()
        _attention_cost.cache_clear()
        batch = Batch(prefill_tokens=300 + i, prefill_seqs=2, prefill_context=900,
                      decode_seqs=400, decode_context=400 * (350 + i))  # fmt: skip
        t0 = time.perf_counter()
        replica.step_time(batch)
        cold.append(time.perf_counter() - t0)
    replica = _replica(FP8)
    batches = [Batch(prefill_tokens=300, prefill_seqs=2, prefill_context=900, decode_seqs=400,
                     decode_context=400 * (350 + i)) for i in range(2000)]  # fmt: skip
    replica.step_time(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        replica.step_time(b)
    warm = (time.perf_counter() - t0) / len(batches)
    return {"cold_us": 1e6 * statistics.median(cold), "warm_us": 1e6 * warm}


_CHILD = """
import resource, tracemalloc, time
from tapeout.hardware import get_chip
from tapeout.parallel.inference import InferencePlan
from tapeout.perf.system import System
from tapeout.sim.llm import Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.serve import simulate
from tapeout.workloads.models import get_model
plan = InferencePlan(tp=8, precision="fp8")
r = Replica.of(get_model("llama-2-70b").config, System.of(get_chip("h100-sxm"), 8), plan)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter()
simulate(r, Requests.poisson(100_000, 32.0, Lengths(kind="lognormal", mean=222.3, sigma=0.8),
                             Lengths(kind="lognormal", mean=290.3, sigma=0.8)), max_batch=512)
seconds = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
print(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, before, seconds)
"""


def bench_100k() -> dict[str, float]:
    """100,000 requests in a fresh process: peak Python allocations and peak resident set."""
    out = subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True, text=True)
    peak, rss_kib, before_kib, seconds = out.stdout.split()
    return {"traced_peak_mb": int(peak) / 1e6, "process_peak_rss_mb": int(rss_kib) / 1024,
            "rss_before_mb": int(before_kib) / 1024, "seconds": float(seconds)}  # fmt: skip


def bench_peer() -> dict[str, object]:
    """The MLPerf H100 offline case: 4 replicas of tp 2, batch 896, 222.3 in / 290.3 out, fp8."""
    t0 = time.perf_counter()
    ours = scenarios.offline(_replica(FP8), 222.3, 290.3, batch=896, replicas=4)
    ours_s = time.perf_counter() - t0
    row: dict[str, object] = {
        "measured_tokens_per_s": MEASURED,
        "tapeout_tokens_per_s": ours.tokens_per_s,
        "tapeout_error": ours.tokens_per_s / MEASURED - 1,
        "tapeout_seconds": ours_s,
    }
    if not peer_available():
        row["peer"] = f"not installed (pip install {PEER_REQUIREMENT})"
        return row
    run_llm_analysis(
        model="llama-2-70b", gpu="h100-sxm", tp=2, batch=896, input_len=222, output_len=290, dtype="fp8"
    )  # fmt: skip  (the first call imports the package)
    peer = run_llm_analysis(model="llama-2-70b", gpu="h100-sxm", tp=2, batch=896, input_len=222,
                            output_len=290, dtype="fp8")  # fmt: skip
    peer_tps = 4 * float(peer["tokens_per_s"])
    row.update({
        "peer": PEER_REQUIREMENT,
        "peer_tokens_per_s": peer_tps,
        "peer_error": peer_tps / MEASURED - 1,
        "peer_seconds": float(peer["seconds"]),
        "time_ratio_tapeout_over_peer": ours_s / float(peer["seconds"]),
    })  # fmt: skip
    return row


def main() -> None:
    report = {
        "simulate_10k_requests": bench_10k(),
        "iteration_latency": bench_iteration(),
        "simulate_100k_requests_memory": bench_100k(),
        "peer_mlperf_h100_offline": bench_peer(),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
        return
    for name, values in report.items():
        if isinstance(values, dict):
            print(name)
            for k, v in values.items():
                print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")
        else:
            print(f"{name} {values:.4g}")


if __name__ == "__main__":
    main()
