"""The explorer's results store and executors: a killed sweep resumes without losing or repeating
a design, foreign and corrupt stores are refused by name, Ray gives the local results, and the
command line reads a store back."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapeout.errors import TapeoutError
from tapeout.explore import explore, load_space, show
from tapeout.explore.store import Store, model_version

pytest.importorskip("pyarrow", reason="the results store needs pyarrow (the explore extra)")

ROOT = Path(__file__).parent.parent
SMALL = ROOT / "examples" / "explore-small.yaml"
SPACE = """\
schema: tapeout-space/1
base: tapeout-i1
knobs:
  num_cores: {min: 16, max: 128, step: 4}
  clock_ghz: {min: 0.8, max: 2.0, step: 0.05}
  memory.interfaces: [3, 4, 5, 6, 7, 8]
  sram.global.capacity_mib: {min: 32, max: 256, step: 32}
constraints:
  die_area_mm2: {max: 700}
mix:
  - {name: chat, kind: llm_serving, model: llama-3.1-8b, plan: {precision: fp8}, input_len: 512,
     output_len: 128, ttft_limit_s: 1.0, tpot_limit_s: 0.05, max_batch: 64}
objectives: {usd_per_million: min, throughput: max}
search: {strategy: random, budget: %d, seed: 3, batch: %d}
"""


def _space(tmp_path: Path, budget: int = 400, batch: int = 20) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE % (budget, batch))
    return path


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def _by_key(rows: list) -> dict:
    return {r.key: r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_sweep_resumes_with_every_design_once(tmp_path, sig):
    """Kill a sweep half-way, run it again: every design is stored once, with the results of an
    uninterrupted run."""
    space = _space(tmp_path, budget=4000, batch=25)
    out = tmp_path / "killed"
    code = f"from tapeout.explore import explore; explore({str(space)!r}, out={str(out)!r}, workers=1)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, sig)
    proc.wait()
    stored = len(show(out).rows)
    assert 0 < stored < 4000
    resumed = explore(space, out=out, workers=1)
    assert resumed.evaluated == 4000 - stored  # nothing stored is evaluated again
    whole = explore(space, out=tmp_path / "whole", workers=1)
    keys = [r.key for r in resumed.rows]
    assert len(keys) == len(set(keys)) == len(whole.rows) == 4000
    again, ref = _by_key(resumed.rows), _by_key(whole.rows)
    assert again.keys() == ref.keys()
    for k, r in ref.items():
        got = again[k]
        assert (
            got.index == r.index
            and got.result.knobs == r.result.knobs
            and got.result.feasible == r.result.feasible
        )
        assert _same(dict(got.result.metrics), dict(r.result.metrics))


def test_rerun_evaluates_nothing_and_gives_the_same_front(tmp_path):
    out = tmp_path / "store"
    first = explore(SMALL, out=out, workers=1)
    second = explore(SMALL, out=out, workers=1)
    assert second.evaluated == 0 and len(second.rows) == len(first.rows) == 36
    assert [r.key for r in second.front] == [r.key for r in first.front]


def test_local_processes_give_the_results_of_one_process(tmp_path):
    space = _space(tmp_path)
    one = explore(space, out=tmp_path / "one", workers=1)
    two = explore(space, out=tmp_path / "two", workers=2)
    assert [r.key for r in one.rows] == [r.key for r in two.rows]
    assert all(
        _same(dict(a.result.metrics), dict(b.result.metrics)) for a, b in zip(one.rows, two.rows, strict=True)
    )


def test_store_of_another_space_or_model_is_refused(tmp_path):
    out = tmp_path / "store"
    explore(SMALL, out=out, workers=1)
    other = _space(tmp_path)
    with pytest.raises(TapeoutError, match=r"results store .*: written for another space \(space_hash"):
        explore(other, out=out, workers=1)
    with pytest.raises(TapeoutError, match="written for another model version"):
        Store.open(out, load_space(SMALL), model_version() + "-other")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["space_hash"] == load_space(SMALL).hash and manifest["model_version"] == model_version()


def test_corrupt_store_is_named(tmp_path):
    out = tmp_path / "store"
    explore(SMALL, out=out, workers=1)
    part = next(out.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(TapeoutError, match=rf"results store .*: {part.name} is corrupt"):
        show(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(TapeoutError, match=r"manifest\.json is corrupt or unreadable"):
        explore(SMALL, out=out, workers=1)


def test_half_written_batch_is_dropped(tmp_path):
    out = tmp_path / "store"
    explore(SMALL, out=out, workers=1)
    (out / "part-0000.parquet.tmp123").write_bytes(b"PAR1 half")
    assert len(show(out).rows) == 36 and not list(out.glob("*.tmp*"))


def test_constraint_no_design_meets_names_the_closest(tmp_path):
    path = tmp_path / "tight.yaml"
    path.write_text(SMALL.read_text().replace("die_area_mm2: {max: 600}", "die_area_mm2: {max: 200}"))
    with pytest.raises(TapeoutError) as err:
        explore(path, out=tmp_path / "store", workers=1)
    text = str(err.value)
    assert "no design meets die_area_mm2 <= 200 mm^2; the closest, {num_cores: 32, clock_ghz: 1.2" in text
    assert "every design is stored in" in text


@pytest.mark.slow
def test_ray_gives_the_local_results(tmp_path):
    pytest.importorskip("ray", reason="the ray executor needs Ray (the ray extra)")
    space = _space(tmp_path, budget=200)
    local = explore(space, out=tmp_path / "local", workers=2)
    ray = explore(space, out=tmp_path / "ray", executor_kind="ray", workers=2)
    assert [r.key for r in ray.rows] == [r.key for r in local.rows]
    assert all(
        _same(dict(a.result.metrics), dict(b.result.metrics))
        for a, b in zip(ray.rows, local.rows, strict=True)
    )


def test_unreachable_ray_address_fails_fast(tmp_path):
    pytest.importorskip("ray", reason="the ray executor needs Ray (the ray extra)")
    with pytest.raises(
        TapeoutError, match=r"--ray-address 127\.0\.0\.1:1: cannot reach a Ray cluster there within 3 s"
    ):
        explore(SMALL, out=tmp_path / "s", executor_kind="ray", ray_address="127.0.0.1:1")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from tapeout.cli import main; main()", *args], capture_output=True,
                          text=True, check=False,
                          cwd=ROOT)  # fmt: skip


def test_cli_explore_and_show(tmp_path):
    out = tmp_path / "store"
    run = _cli("explore", str(SMALL), "--out", str(out), "--workers", "1", "--json")
    assert run.returncode == 0, run.stderr
    swept = json.loads(run.stdout)
    assert len(swept["designs"]) == 36 and swept["front"]
    assert set(swept["designs"][0]) == {"knobs", "metrics", "feasible", "reason"}
    shown = json.loads(_cli("explore", "show", str(out), "--json").stdout)
    assert shown["designs"] == swept["designs"] and shown["front"] == swept["front"]
    table = _cli("explore", "show", str(out))
    assert "Pareto front: usd_per_million (min), throughput (max)" in table.stdout


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("num_cores:", "cores:"))
    run = _cli("explore", str(bad), "--out", str(tmp_path / "s"))
    assert run.returncode == 2 and "field 'knobs.cores': unknown knob; known:" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    missing = _cli("explore", "show", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "not a results store" in missing.stderr
