"""Hostile input at volume: every loader over 10,000 generated inputs, and the case predictions and
the command line over 1,000 (each of those runs a prediction or a command). For each: how many
inputs loaded, how many were refused with a TapeoutError, and the failures, which must be none:
any other exception, a hang, a traceback, or NaN or Infinity in JSON output.

The properties and strategies are those of tests/test_fuzz.py (tests/fuzz_properties.py and
tests/fuzz_strategies.py): the real examples (catalog chips, designs, models, the public cases,
the demand example) mutated at any depth, files written from them with characters edited, any
bytes, odd numbers and ids on the command line. Not derandomized: each run tries new inputs, and
a failure prints the input that caused it.

Run: `OMP_NUM_THREADS=1 python benchmarks/fuzz_inputs.py [--examples N] [--json]` (N a loader,
default 10,000; a tenth of N for the two heavy properties). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import reprlib
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import fuzz_properties as fp

HEAVY_SHARE = 10  # the heavy properties run N / 10 examples
_short = reprlib.Repr()  # inputs shown cut short: strings of 10,000 characters, nesting 150 deep
_short.maxstring, _short.maxother, _short.maxlong, _short.maxlevel = 80, 80, 40, 6


def _shown(value: Any) -> str:
    try:
        return _short.repr(value)
    except ValueError:  # Python prints no integer of over 4,300 digits
        return "an input holding an integer too long to print"


def run(prop: fp.Property, examples: int, folder: Path) -> dict[str, Any]:
    """Run one property over `examples` generated inputs; count the outcomes."""
    counts: Counter[str] = Counter()
    failures: list[str] = []

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(prop.strategy)
    def each(value: Any) -> None:
        try:
            with fp.time_limit(prop.seconds):
                counts[prop.check(folder, value)] += 1
        except (Exception, fp.Hang) as exc:  # a bug: counted and shown, and the run goes on
            counts["failed"] += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            failures.append(
                f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}: {str(exc)[:300]} "
                f"<- {_shown(value)}"
            )

    start = time.perf_counter()
    each()
    return {
        "examples": sum(counts.values()), "ok": counts["ok"], "refused": counts["refused"],
        "failures": counts["failed"], "seconds": round(time.perf_counter() - start, 1),
        "failed_inputs": failures[:10],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples a loader")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, dict[str, Any]] = {}
    if not args.json:
        print(f"{'property':<20} {'examples':>9} {'ok':>7} {'refused':>8} {'failures':>9} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="tapeout-fuzz-") as tmp:
        for name, prop in fp.PROPERTIES.items():
            n = max(1, args.examples // HEAVY_SHARE) if prop.heavy else args.examples
            row = out[name] = run(prop, n, Path(tmp))
            if not args.json:
                print(f"{name:<20} {row['examples']:>9,} {row['ok']:>7,} {row['refused']:>8,} "
                      f"{row['failures']:>9,} {row['seconds']:>8.1f}", flush=True)  # fmt: skip
                for line in row["failed_inputs"]:
                    print(f"    {line}", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    total = {k: sum(r[k] for r in out.values()) for k in ("examples", "ok", "refused", "failures", "seconds")}
    print(f"{'all':<20} {total['examples']:>9,} {total['ok']:>7,} {total['refused']:>8,} "
          f"{total['failures']:>9,} {total['seconds']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
