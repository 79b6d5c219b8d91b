"""Speed of the op cost rules and of validating the public op cases.

Targets (issue: foundation): all public op cases predicted in < 1 s; one matmul cost evaluation
< 20 us. Run: `OMP_NUM_THREADS=1 python benchmarks/bench_ops.py [--json]`. Reports medians of
repeated runs; nothing is asserted (shared machines are noisy).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tapeout.hardware import get_chip
from tapeout.perf import System, op_cost
from tapeout.perf.attention import _attention_cost
from tapeout.perf.matmul import _matmul_cost
from tapeout.validate import PUBLIC_CASES, load_cases, predict
from tapeout.workloads.ops import Attention, Matmul


def per_call(fn, calls: int, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(i)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def main() -> None:
    system = System.of(get_chip("h100-sxm"))
    shapes = [Matmul(m=64 + i, n=4096 + 8 * (i % 97), k=4096) for i in range(2000)]

    def matmul_uncached(i: int) -> None:
        if i == 0:
            _matmul_cost.cache_clear()
        op_cost(shapes[i], system)

    matmul_cold = per_call(matmul_uncached, len(shapes))
    op_cost(shapes[0], system)
    matmul_warm = per_call(lambda i: op_cost(shapes[0], system), 20000)

    attn = [
        Attention(batch=8, q_len=1, kv_len=1024 + i, heads=64, kv_heads=8, head_dim=128) for i in range(500)
    ]

    def attention_uncached(i: int) -> None:
        if i == 0:
            _attention_cost.cache_clear()
        op_cost(attn[i], system)

    attention_cold = per_call(attention_uncached, len(attn))

    cases = load_cases(PUBLIC_CASES)
    op_cases = [c for c in cases if c.kind in ("gemm", "attention", "memory", "collective")]

    def validate_ops(_: int) -> None:
        _matmul_cost.cache_clear()
        _attention_cost.cache_clear()
        for c in op_cases:
            predict(c)

    validate_s = per_call(validate_ops, 1, repeats=5)
    t0 = time.perf_counter()
    load_cases(PUBLIC_CASES)
    load_s = time.perf_counter() - t0

    result = {
        "matmul_eval_uncached_us": matmul_cold * 1e6,
        "matmul_eval_cached_us": matmul_warm * 1e6,
        "attention_eval_uncached_us": attention_cold * 1e6,
        "public_op_cases": len(op_cases),
        "public_op_cases_predict_s": validate_s,
        "public_case_file_load_s": load_s,
        "targets": {"matmul_eval_us": 20, "public_op_cases_s": 1.0},
    }
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:32s} {value:.3g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
