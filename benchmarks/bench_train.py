"""Speed of the training-step model and its plan search, and a peer on the same case.

Targets (issue: LLM training): one plan evaluated in < 2 ms; the full plan search for
llama-3.1-405b on 16,384 H100 in < 10 s. The peer is llm-analysis from PyPI
(`pip install llm-analysis==0.2.2`), run on the NeMo 24.07 GPT-3 175B case of 512 H100 beside
tapeout, both against the measured value.

Run: `OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--json]`. Medians of repeats; nothing is
asserted (shared machines are noisy).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tapeout.hardware import get_chip
from tapeout.parallel import training
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.attention import _attention_cost
from tapeout.perf.matmul import _matmul_cost
from tapeout.perf.system import System
from tapeout.search.training import search
from tapeout.sim import train as train_module
from tapeout.sim.train import train_step
from tapeout.workloads import transformer
from tapeout.workloads.models import get_model

sys.path.insert(0, str(Path(__file__).parent))
from peer_llm_analysis import PEER_REQUIREMENT, peer_available, run_llm_analysis_training

# NeMo 24.07 GPT-3 175B on 512 H100, fp8 (public case train-nemo2407-gpt3-175b-h100x512)
MEASURED_TOKENS_PER_S = 400384.0
GPT3 = dict(seq_len=2048, global_batch=2048)
GPT3_PLAN = TrainingPlan(tp=4, pp=8, vpp=6, micro_batch=2, precision="fp8")


def _clear(lowering: bool = True) -> None:
    """Empty the cost caches; with `lowering`, the model's lowered and sharded graphs too."""
    _matmul_cost.cache_clear()
    _attention_cost.cache_clear()
    for cached in (train_module._layer_cost, train_module._ends_cost, train_module._micro_batch,
                   train_module._data_parallel):  # fmt: skip
        cached.cache_clear()
    if lowering:
        for cached in (train_module._graphs, train_module._layer_stats, train_module._ends_params,
                       train_module._shape, train_module._training, train_module.model_flops_per_token,
                       training.communicator, transformer.layer_template, transformer.attention_template,
                       transformer.census):  # fmt: skip
            cached.cache_clear()


def bench_plan() -> dict[str, float]:
    """One plan of llama-3.1-405b on 16,384 H100: cold (every cache empty), with the model's graphs
    already lowered and only the cost caches empty, and warm."""
    model = get_model("llama-3.1-405b").config
    system = System.of(get_chip("h100-sxm"), 16384)
    plan = TrainingPlan(
        tp=8, pp=16, vpp=2, micro_batch=1, sequence_parallel=True, recompute="selective", zero=1
    )
    cold, costs = [], []
    for _ in range(5):
        _clear()
        t0 = time.perf_counter()
        train_step(model, system, plan, seq_len=8192, global_batch=2048, check_memory=False)
        cold.append(time.perf_counter() - t0)
        _clear(lowering=False)
        t0 = time.perf_counter()
        train_step(model, system, plan, seq_len=8192, global_batch=2048, check_memory=False)
        costs.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(200):
        train_step(model, system, plan, seq_len=8192, global_batch=2048, check_memory=False)
    return {"cold_ms": 1e3 * statistics.median(cold), "cost_caches_cold_ms": 1e3 * statistics.median(costs),
            "warm_ms": 1e3 * (time.perf_counter() - t0) / 200}  # fmt: skip


def bench_search() -> dict[str, object]:
    model = get_model("llama-3.1-405b").config
    system = System.of(get_chip("h100-sxm"), 16384)
    _clear()
    t0 = time.perf_counter()
    result = search(model, system, seq_len=8192, global_batch=2048)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tried": result.tried, "feasible": result.feasible,
            "best_step_time_s": result.best.step_time_s, "best_mfu": result.best.mfu,
            "best_plan": result.best.as_dict()["plan"]}  # fmt: skip


def bench_peer() -> dict[str, object]:
    system = System.of(get_chip("h100-sxm"), 512)
    t0 = time.perf_counter()
    ours = train_step(get_model("gpt3-175b").config, system, GPT3_PLAN, check_memory=False, **GPT3)
    ours_s = time.perf_counter() - t0
    row: dict[str, object] = {
        "measured_tokens_per_s": MEASURED_TOKENS_PER_S,
        "tapeout_tokens_per_s": ours.tokens_per_s,
        "tapeout_error": ours.tokens_per_s / MEASURED_TOKENS_PER_S - 1,
        "tapeout_seconds": ours_s,
    }
    if not peer_available():
        row["peer"] = f"not installed (pip install {PEER_REQUIREMENT})"
        return row
    args = dict(
        model="gpt3-175b", gpu="h100-sxm", chips=512, tp=4, pp=8, dp=16, micro_batch=2, dtype="fp8", **GPT3
    )
    run_llm_analysis_training(**args)  # the first call imports the package
    peer = run_llm_analysis_training(**args)
    row.update({
        "peer": PEER_REQUIREMENT + " (w8a8e16, its default efficiency 1.0)",
        "peer_tokens_per_s": float(peer["tokens_per_s"]),
        "peer_error": float(peer["tokens_per_s"]) / MEASURED_TOKENS_PER_S - 1,
        "peer_seconds": float(peer["seconds"]),
        "time_ratio_tapeout_over_peer": ours_s / float(peer["seconds"]),
    })  # fmt: skip
    return row


def main() -> None:
    report = {
        "plan": bench_plan(),
        "search_405b_16384_h100": bench_search(),
        "peer_nemo_gpt3_512_h100": bench_peer(),
    }
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
        return
    for name, values in report.items():
        print(name)
        for k, v in values.items():
            print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")


if __name__ == "__main__":
    main()
