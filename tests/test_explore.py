"""Design-space exploration: the batch path held to the scalar path, the space file's errors, the
Pareto front against a naive reference, and the searches' determinism."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tapeout._yaml import load_data_file
from tapeout.cost.api import load_chip
from tapeout.cost.tco import TcoAssumptions
from tapeout.cost.unit import unit_cost
from tapeout.errors import TapeoutError
from tapeout.explore import pareto
from tapeout.explore.columns import silicon_batch
from tapeout.explore.evaluate import Evaluator
from tapeout.explore.kinds import lower
from tapeout.explore.knobs import apply
from tapeout.explore.mix import Context
from tapeout.explore.search import Grid, Random, key
from tapeout.explore.silicon import silicon
from tapeout.explore.space import load_space, parse_space
from tapeout.explore.vector import Designs, op_costs
from tapeout.hardware.catalog import DESIGNS_DIR
from tapeout.hardware.design import Design
from tapeout.perf.rules import graph_cost
from tapeout.perf.system import System
from tapeout.workloads.ops import (
    AllGather,
    AllReduce,
    AllToAll,
    Attention,
    Copy,
    Elementwise,
    Gather,
    Matmul,
    Reduce,
    SendRecv,
)

ROOT = Path(__file__).parent.parent
SMALL = ROOT / "examples" / "explore-small.yaml"
BASE = load_data_file(DESIGNS_DIR / "tapeout-i1.yaml")
TOLERANCE = 1e-9  # relative: the batch path repeats the scalar rules' arithmetic
# Designs around tapeout-i1 that move every rate the rules read: cores, matrix-unit shape, clock,
# SRAM per core and shared, memory stacks and type, links, node.
VARIANTS = [
    {},
    {"num_cores": 32, "clock_ghz": 1.2},
    {"matrix_unit.rows": 64, "matrix_unit.cols": 16, "memory.interfaces": 4},
    {"sram.global.capacity_mib": 16, "sram.local.capacity_kib": 64, "scale_up.links": 4},
    {"process_node": "N3", "memory.type": "HBM3e", "memory.gb_per_interface": 24, "num_cores": 96},
    {"sram.global.capacity_mib": 0.0625, "matrix_unit.per_core": 8, "vector_lanes_per_core": 16},
]
MIX = {
    "chat": {"kind": "llm_serving", "model": "llama-3.1-8b", "plan": {"tp": 1, "precision": "fp8"},
             "input_len": 512, "output_len": 128, "ttft_limit_s": 1.0, "tpot_limit_s": 0.05, "max_batch": 64},
    "chat-tp": {"kind": "llm_serving", "model": "mixtral-8x7b", "plan": {"tp": 4, "pp": 2},
                "input_len": 256, "output_len": 64, "ttft_limit_s": 5.0, "tpot_limit_s": 0.2, "max_batch": 32},
    "ranking": {"kind": "recsys", "model": "dlrm-v2", "pairs_per_sample": 100, "p99_limit_s": 0.02},
    "ranking-8": {"kind": "recsys", "model": "dlrm-v2", "chips": 8, "plan": {"sharding": "table"},
                  "pairs_per_sample": 50, "p99_limit_s": 0.02, "max_batch": 256},
    "pretrain": {"kind": "llm_training", "model": "llama-3.1-8b", "chips": 8, "seq_len": 2048,
                 "global_batch": 16, "plan": {"tp": 8}},
}  # fmt: skip


def _sil(knobs: dict) -> object:
    return silicon(BASE, knobs, origin="test", volume=200_000, tco=TcoAssumptions(), bounds=())


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=1e-300)


# ---- the batch path against the scalar path --------------------------------------------------
@pytest.mark.parametrize(
    "op",
    [
        Matmul(m=4096, n=4096, k=4096, precision="fp8", out_precision="bf16"),
        Matmul(m=16, n=14336, k=4096, weight_precision="fp8"),
        Matmul(m=300, n=128, k=8192, groups=8),
        Attention(batch=1, q_len=2048, kv_len=2048, heads=32, kv_heads=8, head_dim=128, causal=True),
        Attention(batch=64, q_len=1, kv_len=3000, heads=32, kv_heads=8, head_dim=128, precision="fp8"),
        Attention(batch=2, q_len=512, kv_len=512, heads=16, kv_heads=16, head_dim=64, backward=True),
        Elementwise(elements=2**24, reads=2, writes=1, precision="fp32"),
        Reduce(rows=4096, cols=8192),
        Gather(lookups=1e6, dim=128, rows=10**7, outputs=1e4, precision="int8", cached=0.3),
        Copy(size_bytes=2**28),
        AllReduce(ranks=8, bytes_per_rank=2**26),
        AllGather(ranks=4, bytes_per_rank=2**20),
        AllToAll(ranks=8, bytes_per_rank=2**22),
        SendRecv(ranks=2, bytes_per_rank=2**20),
    ],
    ids=lambda op: type(op).__name__,
)
def test_vector_rule_matches_graph_cost_on_each_design(op):
    """Every op kind's batch rule gives `graph_cost`'s time and energy on each design's System."""
    sils = [_sil(v) for v in VARIANTS]
    chips = [s.chip for s in sils]
    systems = [System.of(c, 8) for c in chips]
    d = Designs(chips=chips, system_chips=8, cal=systems[0].cal, load="serving")
    seconds, joules = op_costs(op, d)
    for i, system in enumerate(systems):
        ref = graph_cost([op], system)
        assert _close(seconds[i], ref.time_s), (i, seconds[i], ref.time_s)
        assert _close(joules[i], ref.energy_j), (i, joules[i], ref.energy_j)


@pytest.mark.parametrize("name", list(MIX))
def test_workload_batch_matches_scalar(name):
    """Each workload kind's fast path gives the simulators' metrics, design by design."""
    w = lower({"name": name, **MIX[name]}, 0, "test", Context(software="mature"))
    sils = [_sil(v) for v in VARIANTS]
    fast = w.batch(sils)
    for i, s in enumerate(sils):
        ref = w.scalar(s)
        assert bool(fast.feasible[i]) == bool(ref.feasible[0]), (i, fast.reasons[i], ref.reasons[0])
        for metric, values in ref.metrics.items():
            assert _close(fast.metrics[metric][i], values[0]), (i, metric, fast.metrics[metric][i], values[0])
    assert fast.feasible.any()


def test_silicon_is_the_cost_model_of_the_design_file(tmp_path):
    """A design's silicon metrics are `cost.unit.unit_cost` of the same design written as a file."""
    for knobs in VARIANTS:
        design = tmp_path / "design.yaml"
        import yaml

        design.write_text(yaml.safe_dump(apply(BASE, knobs)))
        expected = unit_cost(load_chip(str(design)), volume=200_000)
        got = _sil(knobs).metrics
        assert got["unit_cost_usd"] == expected.total_usd
        assert got["die_area_mm2"] == expected.area.total
        assert got["power_w"] == expected.power.full_load_w


# Every knob, at values that also make designs fail each check: HBM3e stacks of 16 GB (not a stack),
# 400 cores (over the reticle), 12 stacks on a small die (no edge for them), 100 W (under half
# the clock), N3 and DRAM memories (other node and memory constants).
ALL_KNOBS = """
knobs:
  num_cores: [16, 64, 400]
  clock_ghz: {min: 0.8, max: 2.2}
  matrix_unit.rows: [16, 64, 128]
  matrix_unit.cols: [16, 32, 256]
  matrix_unit.per_core: [1, 4]
  vector_lanes_per_core: [32, 512]
  memory.type: [HBM2e, HBM3, HBM3e, LPDDR5X, GDDR7]
  memory.interfaces: [2, 6, 12]
  memory.gb_per_interface: [16, 24]
  sram.local.capacity_kib: [64, 2048]
  sram.global.capacity_mib: {min: 1, max: 512, log: true}
  scale_up.links: [4, 16, 32]
  process_node: [N7, N5, N3]
  power_budget_w: [100, 400, 900]
constraints: {unit_cost_usd: {max: 12000}}
"""


CHECKS = ("constraint", "not a HBM", "reticle", "long edge", "power budget", "wafer")


@pytest.mark.parametrize("base", ["tapeout-i1", "tapeout-t1"])
def test_batch_silicon_matches_each_design_alone(base):
    """`explore.columns` gives each design the silicon `explore.silicon` gives it alone: the same
    metrics, reason and violation, the same chip, and the same FLOP energy."""
    import yaml

    raw = {**_raw(), "base": base, **yaml.safe_load(ALL_KNOBS)}
    raw["knobs"] = {**raw["knobs"], "memory.gb_per_interface": [16, 24] if base == "tapeout-i1" else [24, 36]}
    space = parse_space(raw, "test", ROOT)
    points = Random(space, 400, 3).ask(400)
    design = Design.model_validate(dict(space.base))
    fast = silicon_batch(space.base, design, points, origin=space.origin, volume=space.volume, tco=space.tco,
                         bounds=space.bounds)  # fmt: skip
    seen = set()
    for got, p in zip(fast, points, strict=True):
        ref = silicon(
            space.base, p, origin=space.origin, volume=space.volume, tco=space.tco, bounds=space.bounds
        )
        assert got.reason == ref.reason, p
        assert _close(got.violation, ref.violation)
        assert got.metrics.keys() == ref.metrics.keys()
        assert all(_close(got.metrics[k], ref.metrics[k]) for k in ref.metrics), p
        seen |= {k for k in CHECKS if k in ref.reason} if ref.reason else {"ok"}
        if ref.ok:
            assert got.chip == ref.chip
            assert all(_close(got.joules(f), ref.joules(f)) for f in ("bf16", "fp8", "fp32", "int8"))
    assert seen == {"ok", *CHECKS}, seen  # designs that pass, and designs that fail each check


def test_evaluate_batch_matches_evaluate():
    space = load_space(SMALL)
    ev, reference = Evaluator(space), Evaluator(space)
    points = Grid(space, None).ask(12)
    for fast, p in zip(ev.evaluate_batch(points), points, strict=True):
        ref = reference.evaluate(p)
        assert fast.feasible == ref.feasible and fast.reason == ref.reason
        assert fast.metrics.keys() == ref.metrics.keys()
        assert all(_close(fast.metrics[k], ref.metrics[k]) for k in ref.metrics)


def test_mix_objectives_follow_from_the_workloads():
    """throughput = 1 / sum(share_i / rate_i); the per-dollar and per-watt figures divide it."""
    space = load_space(SMALL)
    r = Evaluator(space).evaluate(Grid(space, None).ask(1)[0])
    m = r.metrics
    shares = {"chat": 1 / 11, "ranking": 10 / 11}
    assert math.isclose(m["throughput"], 1 / sum(s / m[f"{n}.per_s"] for n, s in shares.items()))
    assert math.isclose(m["perf_per_watt"], m["throughput"] / m["tdp_w"])
    assert math.isclose(m["perf_per_tco"] * m["usd_per_million"], 1e6)


def test_constraints_are_checked_before_the_workloads():
    space = parse_space({**_raw(), "constraints": {"die_area_mm2": {"max": 300}}}, "test", ROOT)
    ev = Evaluator(space)
    big = ev.evaluate({"num_cores": 64, "clock_ghz": 1.4})
    assert not big.feasible and big.reason.startswith("constraint die_area_mm2 <= 300 mm^2")
    assert math.isnan(big.metrics["chat.per_s"])  # never costed on the mix
    assert big.violation > 0


# ---- the space file ----------------------------------------------------------------------------
def _raw(**changes: object) -> dict:
    raw = {
        "schema": "tapeout-space/1", "base": "tapeout-i1",
        "knobs": {"num_cores": {"min": 32, "max": 64, "step": 32}, "clock_ghz": [1.2, 1.4]},
        "mix": [{"name": "chat", **MIX["chat"]}],
        "objectives": {"usd_per_million": "min", "throughput": "max"},
    }  # fmt: skip
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"knobs": {"cores": [1]}}, "field 'knobs.cores': unknown knob; known: clock_ghz, matrix_unit.cols"),
        ({"knobs": {"num_cores": {"min": 64, "max": 32}}}, "the range is empty: min 64 > max 32 cores"),
        (
            {"knobs": {"clock_ghz": {"min": 1, "max": 12}}},
            "knobs.clock_ghz'.max: 12 GHz is above the physical bound 10",
        ),
        (
            {"knobs": {"matrix_unit.rows": {"min": 0, "max": 8}}},
            "knobs.matrix_unit.rows'.min: 0 MACs is below the physical bound 1",
        ),
        ({"knobs": {"num_cores": {"min": 1, "max": 9, "step": 0}}}, "step: must be > 0 cores"),
        ({"knobs": {"num_cores": {"min": 1, "max": 9, "log": True, "step": 2}}}, "give either step or log"),
        ({"knobs": {"memory.type": ["HBM5"]}}, "unknown choice 'HBM5'; known: HBM2"),
        (
            {"knobs": {"memory.type": ["HBM3e"]}},
            "HBM3e stacks hold 24, 36 GB; the space allows memory.gb_per_interface 16 GB",
        ),
        ({"base": "tapeout-x9"}, "unknown base 'tapeout-x9'"),
        ({"base": "mtia-v1", "knobs": {"memory.interfaces": [4]}}, "knobs.memory.interfaces': unknown knob"),
        ({"mix": [{"name": "c", "kind": "program"}]}, "mix 'c': field 'program': expected a name, got"),
        (
            {"mix": [{"name": "c", "kind": "llm_inference"}]},
            "unknown 'llm_inference'; known: llm_serving, llm_training, program, recsys",
        ),
        (
            {"mix": [{**MIX["chat"], "name": "c", "tpot_limit_s": -1}]},
            "field 'tpot_limit_s': expected a number in (0,",
        ),
        (
            {"mix": [{**MIX["chat"], "name": "c", "plan": {"tq": 2}}]},
            "field 'plan': unknown ['tq']; known: tp, pp",
        ),
        (
            {"constraints": {"area": {"max": 1}}},
            "field 'constraints.area': unknown metric; known: die_area_mm2",
        ),
        ({"constraints": {"die_area_mm2": {"min": 9, "max": 1}}}, "min 9 > max 1: no design can meet it"),
        ({"objectives": {"speed": "max"}}, "field 'objectives.speed': unknown metric; known: throughput"),
        ({"objectives": {"throughput": "up"}}, "expected min or max, got 'up'"),
        ({"search": {"strategy": "anneal"}}, "field 'search.strategy': 'anneal'; known: grid, random, nsga2"),
    ],
)
def test_bad_space_is_named(change, message):
    with pytest.raises(TapeoutError) as err:
        parse_space(_raw(**change), "space.yaml", ROOT).lower()
    assert message in str(err.value)


def test_a_base_that_is_no_valid_design_is_refused(tmp_path):
    import yaml

    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**BASE, "clock_ghz": -1}))
    with pytest.raises(
        TapeoutError, match=r"mine.yaml: tapeout-i1: field 'clock_ghz': .*\(got -1\) \(unit: GHz\)"
    ):
        parse_space({**_raw(), "base": "mine.yaml"}, "s", tmp_path)


def test_space_hash_ignores_the_search_and_follows_the_rest():
    a = parse_space(_raw(), "s", ROOT)
    assert parse_space(_raw(search={"budget": 5, "seed": 3}), "s", ROOT).hash == a.hash
    assert parse_space(_raw(knobs={"num_cores": [32]}), "s", ROOT).hash != a.hash


# ---- searches and fronts -----------------------------------------------------------------------
def test_grid_lists_every_combination_once():
    space = parse_space(_raw(), "s", ROOT)
    points = Grid(space, None).ask(100)
    assert [key(space, p) for p in points] == ["[32, 1.2]", "[32, 1.4]", "[64, 1.2]", "[64, 1.4]"]
    with pytest.raises(TapeoutError, match="the grid of 4 designs is over the budget of 3"):
        Grid(space, 3)


def test_random_is_seeded_distinct_and_within_the_ranges():
    space = parse_space(_raw(knobs={"num_cores": {"min": 8, "max": 200, "step": 8},
                                    "clock_ghz": {"min": 0.5, "max": 2.0, "log": True}}), "s", ROOT)  # fmt: skip
    a, b = Random(space, 300, 7).ask(300), Random(space, 300, 7).ask(300)
    assert a == b and a != Random(space, 300, 8).ask(300)
    assert len({key(space, p) for p in a}) == 300
    assert all(p["num_cores"] % 8 == 0 and 0.5 <= p["clock_ghz"] <= 2.0 for p in a)


def test_nsga2_is_deterministic_for_a_seed():
    pytest.importorskip("optuna", reason="the nsga2 strategy needs Optuna (the explore extra)")
    from tapeout.explore.search import Nsga2

    space = parse_space(_raw(knobs={"num_cores": {"min": 8, "max": 128, "step": 8},
                                    "clock_ghz": {"min": 0.8, "max": 2.0, "step": 0.1}},
                             search={"population": 8}), "s", ROOT)  # fmt: skip
    ev = Evaluator(space)

    def run() -> list:
        s, seen = Nsga2(space, 24, 5), []
        while points := s.ask(8):
            s.tell(points, ev.evaluate_batch(points))
            seen += points
        return seen

    first = run()
    assert len(first) == 24 and first == run()


@pytest.mark.slow
def test_nsga2_asks_as_optunas_stock_sampler(monkeypatch):
    """The sampler that keeps its search space and parents asks for the designs the stock
    NSGA-II sampler asks for, generation after generation."""
    optuna = pytest.importorskip("optuna", reason="the nsga2 strategy needs Optuna (the explore extra)")
    from tapeout.explore import search

    space = load_space(ROOT / "examples" / "explore-inference-chip.yaml")
    ev = Evaluator(space)

    def run() -> list:
        s, seen = search.Nsga2(space, 1000, 7), []
        while points := s.ask(200):
            s.tell(points, ev.evaluate_batch(points))
            seen += points
        return seen

    ours = run()
    monkeypatch.setattr(
        search,
        "_sampler",
        lambda _o, _s, population, seed: optuna.samplers.NSGAIISampler(population_size=population, seed=seed),
    )
    assert ours == run()


def _naive_front(values: np.ndarray, directions: list[str]) -> list[int]:
    c = values * np.array([-1 if d == "max" else 1 for d in directions])
    return [
        i
        for i in range(len(c))
        if not any(np.all(c[j] <= c[i]) and np.any(c[j] < c[i]) for j in range(len(c)))
    ]


@pytest.mark.parametrize("objectives", [2, 3])
def test_front_matches_the_naive_definition(objectives):
    rng = np.random.default_rng(objectives)
    values = np.round(rng.random((300, objectives)), 2)  # ties included
    directions = ["max", "min", "max"][:objectives]
    assert pareto.front(values, directions).tolist() == _naive_front(values, directions)
    r = pareto.ranks(values, directions)
    assert (r >= 0).all() and set(np.flatnonzero(r == 0)) == set(_naive_front(values, directions))


def test_front_skips_designs_without_values():
    values = np.array([[1.0, np.nan], [0.5, 0.5], [0.2, 0.1]])
    assert pareto.front(values, ["max", "max"]).tolist() == [1]


def test_explorer_core_runs_without_its_optional_libraries():
    """pyarrow, Optuna and Ray are imported only when a store, nsga2 or the ray executor is used."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('ray', 'pyarrow', 'optuna'): sys.modules[name] = None\n"
        "from tapeout.explore import Evaluator, load_space\n"
        f"space = load_space({str(SMALL)!r})\n"
        "r = Evaluator(space).evaluate({'num_cores': 48, 'clock_ghz': 1.4, 'memory.interfaces': 6,\n"
        "                                'sram.global.capacity_mib': 192.0})\n"
        "assert r.feasible and r.metrics['throughput'] > 0\n"
        "from tapeout.explore import explore\n"
        "try:\n"
        f"    explore(space, out={str(ROOT / 'never-written')!r})\n"
        "except Exception as exc:\n"
        "    assert 'the results store needs pyarrow' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('a store without pyarrow')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert not (ROOT / "never-written").exists()


def test_a_catalog_chip_base_keeps_its_published_numbers_and_scales_with_the_knobs():
    from tapeout.explore.variant import apply_catalog
    from tapeout.hardware import get_chip
    from tapeout.hardware.catalog import chip_from_mapping

    space = parse_space(_raw(base="h100-sxm", knobs={"num_cores": [132, 264]}, constraints={}), "t", ROOT)
    assert space.catalog
    h100 = get_chip("h100-sxm")
    same = chip_from_mapping(apply_catalog(space.base, {}), "t", "h100-sxm-variant")
    assert (same.peak_tflops, same.memory, same.die, same.tdp_w) == (h100.peak_tflops, h100.memory, h100.die,
                                                                     h100.tdp_w)  # fmt: skip
    assert unit_cost(same).manufacturing_usd == pytest.approx(unit_cost(h100).manufacturing_usd)
    twice = chip_from_mapping(apply_catalog(space.base, {"num_cores": 264, "memory.interfaces": 6,
                                                         "memory.type": "HBM3e", "memory.gb_per_interface": 24}),
                              "t", "v")  # fmt: skip
    assert twice.peak_flops("bf16") == pytest.approx(2 * h100.peak_flops("bf16"))
    assert twice.die is not None and h100.die is not None and twice.die.cores == 2 * h100.die.cores
    # Six stacks at the published rate per stack, scaled by HBM3e's standard rate over HBM3's.
    assert twice.memory.bandwidth_gb_s == pytest.approx(3350 / 5 * 6 * 1200 / 819)
    assert twice.memory.capacity_gb == 144 and twice.price == () and twice.die_area_mm2 is None
    ev = Evaluator(space)
    assert ev.silicon({"num_cores": 132}).ok and ev.silicon({"num_cores": 264}).reason  # past the reticle
