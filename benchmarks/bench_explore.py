"""Speed of design-space exploration.

Run: `python benchmarks/bench_explore.py [--designs N] [--sweep N] [--no-ray]`. Reports, best of
three runs each (the machine is shared):

1. designs evaluated per second on one core on the analytic path (`Evaluator.evaluate_batch`,
   batches of 256) for a one-workload mix (LLM chat serving) and for the full mix of
   `examples/explore-inference-chip.yaml`, split into the silicon (the cost model of a batch of
   new designs, `explore.columns`, and the chips of those that pass) and the workloads (the
   vectorised cost rules);
   the target is 10,000 designs/s per core;
2. a sweep of `--sweep` designs (default 20,000) with the local executor (2 processes) and with
   a local Ray of 2 workers, and their ratio (target: Ray within 1.5x), with and without Ray's
   start-up;
3. NSGA-II's own bookkeeping (Optuna's ask and tell, evaluation excluded) a design over a search
   of `--nsga` designs of the example space, with our sampler and with Optuna's stock one, which
   asks for the same designs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tapeout.explore import explore
from tapeout.explore.evaluate import Evaluator
from tapeout.explore.search import Nsga2, Random
from tapeout.explore.space import Space, load_space

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "explore-inference-chip.yaml"
ONE = """\
schema: tapeout-space/1
base: tapeout-i1
knobs:
  num_cores: {min: 16, max: 160, step: 4}
  clock_ghz: {min: 0.8, max: 2.0, step: 0.02}
  matrix_unit.rows: [16, 32, 64, 128]
  matrix_unit.cols: [16, 32, 64, 128]
  memory.interfaces: {min: 2, max: 8, step: 1}
  sram.global.capacity_mib: {min: 32, max: 512, step: 16}
  power_budget_w: {min: 250, max: 700, step: 10}
mix:
  - {name: chat, kind: llm_serving, model: llama-3.1-8b, plan: {precision: fp8}, input_len: 1024,
     output_len: 256, ttft_limit_s: 1.0, tpot_limit_s: 0.05}
objectives: {usd_per_million: min, throughput: max}
search: {strategy: random, budget: %d, seed: 0, batch: 256}
"""
BATCH = 256
REPEATS = 3


def _rate(space: Space, n: int) -> tuple[float, float, float, int]:
    """Best of REPEATS: (designs/s cold, us of silicon per design, us of workloads per feasible
    design, feasible designs)."""
    points = Random(space, n, 1).ask(n)
    best = (0.0, 0.0, 0.0, 0)
    for _ in range(REPEATS):
        ev = Evaluator(space)
        t = time.perf_counter()
        sils = [s for i in range(0, n, BATCH) for s in ev.silicons(points[i : i + BATCH])]
        silicon_s = time.perf_counter() - t
        ok = [s for s in sils if s.ok]
        t = time.perf_counter()
        for w in ev.workloads:
            for i in range(0, len(ok), BATCH):
                w.batch(ok[i : i + BATCH])
        workloads_s = time.perf_counter() - t
        ev = Evaluator(space)
        t = time.perf_counter()
        for i in range(0, n, BATCH):
            ev.evaluate_batch(points[i : i + BATCH])
        rate = n / (time.perf_counter() - t)
        if rate > best[0]:
            best = (rate, 1e6 * silicon_s / n, 1e6 * workloads_s / max(1, len(ok)), len(ok))
    return best


def _sweep(space_file: Path, kind: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        explore(space_file, out=out, executor_kind=kind, workers=2)
        return time.perf_counter() - t


def _nsga(space: Space, budget: int, stock: bool) -> float:
    """Milliseconds of ask and tell a design over a search of `budget` designs."""
    import optuna

    from tapeout.explore import search

    ours = search._sampler
    if stock:
        search._sampler = lambda _o, _s, population, seed: optuna.samplers.NSGAIISampler(
            population_size=population, seed=seed
        )
    try:
        return _search_ms(space, search.Nsga2(space, budget, 0))
    finally:
        search._sampler = ours


def _search_ms(space: Space, s: Nsga2) -> float:
    ev, spent, n = Evaluator(space), 0.0, 0
    while True:
        t = time.perf_counter()
        points = s.ask(space.search.population)
        spent += time.perf_counter() - t
        if not points:
            return 1e3 * spent / n
        results = ev.evaluate_batch(points)
        t = time.perf_counter()
        s.tell(points, results)
        spent += time.perf_counter() - t
        n += len(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", type=int, default=4096, help="designs per rate measurement")
    parser.add_argument("--sweep", type=int, default=20_000, help="designs of the local-vs-Ray sweep")
    parser.add_argument("--no-ray", action="store_true", help="skip the sweeps")
    parser.add_argument("--nsga", type=int, default=4000, help="designs of the NSGA-II search (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.yaml"
        one.write_text(ONE % args.designs)
        for name, space in (
            ("one workload (chat)", load_space(one)),
            ("full example mix", load_space(EXAMPLE)),
        ):
            rate, silicon_us, workloads_us, ok = _rate(space, args.designs)
            print(f"{name}: {rate:,.0f} designs/s per core (target 10,000); silicon {silicon_us:.0f} us a design, "
                  f"workloads {workloads_us:.0f} us a feasible design ({ok:,} of {args.designs:,} feasible)")  # fmt: skip
        if args.nsga:
            ours = _nsga(load_space(EXAMPLE), args.nsga, stock=False)
            stock = _nsga(load_space(EXAMPLE), args.nsga, stock=True)
            print(f"NSGA-II bookkeeping over {args.nsga:,} designs: {ours:.2f} ms a design, Optuna's stock sampler "
                  f"{stock:.2f} ms ({stock / ours:.2f}x)")  # fmt: skip
        if args.no_ray:
            return
        one.write_text(ONE % args.sweep)
        local = min(_sweep(one, "local") for _ in range(2))
        cold = _sweep(one, "ray")
        import ray  # noqa: TID251  (a benchmark of the Ray executor)

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        warm = min(_sweep(one, "ray") for _ in range(2))
        ray.shutdown()
        print(f"sweep of {args.sweep:,} designs, 2 workers: local {local:.2f} s; Ray {cold:.2f} s with its start-up "
              f"({cold / local:.2f}x), {warm:.2f} s on a running local Ray ({warm / local:.2f}x; target 1.5x)")  # fmt: skip


if __name__ == "__main__":
    main()
