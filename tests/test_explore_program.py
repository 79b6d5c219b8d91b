"""A compiled program as a workload of a space (`kind: program`).

`data/llama-2x512-program.json` is what `tapeout compile` wrote for a two-layer Llama (hidden 512,
8 heads, 4 key/value heads, vocabulary 8,192) on four sequences of 256 tokens, for tapeout-i1:

    compile(causal_lm(config), (token_ids(config, 4, 256),), target="tapeout-i1").program().save(path)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tapeout.errors import TapeoutError
from tapeout.explore.evaluate import Evaluator
from tapeout.explore.search import Random
from tapeout.explore.space import load_space

PROGRAM = Path(__file__).parent / "data" / "llama-2x512-program.json"
SPACE = {
    "schema": "tapeout-space/1",
    "base": "tapeout-i1",
    "knobs": {"num_cores": {"min": 16, "max": 96, "step": 8}, "clock_ghz": {"min": 0.8, "max": 2.0},
              "matrix_unit.rows": [16, 32, 64], "memory.interfaces": [2, 4, 6],
              "scale_up.links": [2, 8, 16], "sram.global.capacity_mib": [8, 64, 256]},
    "mix": [{"name": "llama", "kind": "program", "program": PROGRAM.name},
            {"name": "llama-tp", "kind": "program", "program": PROGRAM.name, "chips": 2, "weight": 2}],
    "objectives": {"usd_per_million": "min", "throughput": "max"},
}  # fmt: skip


def _space(tmp_path: Path, **changes: object) -> Path:
    (tmp_path / PROGRAM.name).write_bytes(PROGRAM.read_bytes())
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def test_batch_matches_scalar_and_runs_count_per_chip(tmp_path):
    space = load_space(_space(tmp_path))
    points = Random(space, 60, 1).ask(60)
    fast, reference = Evaluator(space), Evaluator(space)
    for got, p in zip(fast.evaluate_batch(points), points, strict=True):
        ref = reference.evaluate(p)
        assert got.reason == ref.reason and got.feasible == ref.feasible
        for k, v in ref.metrics.items():
            assert (math.isnan(v) and math.isnan(got.metrics[k])) or math.isclose(
                got.metrics[k], v, rel_tol=1e-9
            ), k
        if ref.feasible:
            m = ref.metrics
            assert math.isclose(m["llama.per_s"], 1 / m["llama.time_s"])
            assert math.isclose(m["llama-tp.per_s"], 1 / (2 * m["llama-tp.time_s"]))


def test_memory_and_latency_limits_name_the_numbers(tmp_path):
    data = json.loads(PROGRAM.read_text())
    data["memory"]["weight_bytes"] = 200e9  # 100 GB a chip over two chips
    (tmp_path / "big.json").write_text(json.dumps(data))
    path = _space(tmp_path, mix=[{"name": "big", "kind": "program", "program": "big.json", "chips": 2},
                                 {"name": "quick", "kind": "program", "program": PROGRAM.name,
                                  "latency_limit_s": 1e-9}])  # fmt: skip
    ev = Evaluator(load_space(path))
    r = ev.evaluate_batch(Random(ev.space, 4, 0).ask(4))
    ok = [x for x in r if x.reason.startswith("big:")]
    assert ok and all("needs 100.02 GB a chip, over the design's" in x.reason for x in ok)
    one = ev.workloads[1].scalar(ev.silicon({**Random(ev.space, 1, 0).ask(1)[0], "num_cores": 32}))
    assert one.reasons[0].startswith("quick: one run takes") and "over the limit of 1e-09 s" in one.reasons[0]


def test_bad_program_entries_are_named(tmp_path):
    with pytest.raises(TapeoutError, match=r"mix 'x': field 'program': no program file 'nowhere.json'"):
        load_space(_space(tmp_path, mix=[{"name": "x", "kind": "program", "program": "nowhere.json"}]))
    (tmp_path / "old.json").write_text(json.dumps({"schema": "tapeout-program/0"}))
    with pytest.raises(TapeoutError, match=r"old.json: field 'schema': 'tapeout-program/0' is not"):
        load_space(_space(tmp_path, mix=[{"name": "x", "kind": "program", "program": "old.json"}]))
    with pytest.raises(TapeoutError, match=r"field 'chips': .*does not divide the 8 attention heads"):
        load_space(
            _space(tmp_path, mix=[{"name": "x", "kind": "program", "program": PROGRAM.name, "chips": 3}])
        )


def test_a_changed_program_is_another_space(tmp_path):
    path = _space(tmp_path)
    before = load_space(path).hash
    data = json.loads((tmp_path / PROGRAM.name).read_text())
    data["sizes"] = {"batch": 8}
    (tmp_path / PROGRAM.name).write_text(json.dumps(data))
    assert load_space(path).hash != before


def test_programs_are_costed_without_torch(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from tapeout.explore.evaluate import Evaluator\n"
        "from tapeout.explore.space import load_space\n"
        f"ev = Evaluator(load_space({str(_space(tmp_path))!r}))\n"
        "r = ev.evaluate({'num_cores': 64, 'clock_ghz': 1.4, 'matrix_unit.rows': 32, 'memory.interfaces': 6,\n"
        "                 'scale_up.links': 16, 'sram.global.capacity_mib': 64})\n"
        "assert r.feasible and r.metrics['llama.per_s'] > 0, r.reason\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_on_its_target_a_program_takes_what_the_compiler_estimates(tmp_path):
    """At tapeout-i1 itself, one run is `estimate_of` the program, on one chip and on two."""
    pytest.importorskip("torch")
    from tapeout.compiler.model import estimate_of
    from tapeout.compiler.program import Program

    space = load_space(_space(tmp_path, knobs={"num_cores": [48]}))  # tapeout-i1's own cores
    r = Evaluator(space).evaluate({"num_cores": 48})
    program = Program.load(PROGRAM)
    assert math.isclose(r.metrics["llama.time_s"], estimate_of(program).time_s, rel_tol=1e-9)
    assert math.isclose(r.metrics["llama-tp.time_s"], estimate_of(program, tp=2).time_s, rel_tol=1e-9)
