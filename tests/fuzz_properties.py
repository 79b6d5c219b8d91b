"""The property every loader and the command line keep, whatever the input: a loader succeeds or
raises `TapeoutError`; the command line exits 0 or 2 with no traceback, prints JSON without NaN or
Infinity on stdout with `--json`, and one JSON object on stderr when it refuses. Anything else (a
KeyError, an OverflowError, a numpy error, a pydantic error escaping, a hang) is a bug.

`PROPERTIES` names each: its strategy (fuzz_strategies.py) and its check, which returns "ok" or
"refused" and raises on a bug. tests/test_fuzz.py runs each over a few dozen examples;
benchmarks/fuzz_inputs.py over 10,000.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hypothesis import strategies as st

import fuzz_strategies as fs
from tapeout._yaml import load_data_file, set_max_file_mb
from tapeout.cases import load_cases, parse_case
from tapeout.cli import main
from tapeout.cost.api import cost
from tapeout.cost.unit import check_design, unit_cost
from tapeout.errors import TapeoutError
from tapeout.hardware import catalog
from tapeout.hardware.design import expand_design
from tapeout.hardware.spec import ChipSpec
from tapeout.plan.demand import load_demand, parse_demand
from tapeout.sim.requests import Requests
from tapeout.validate import predict
from tapeout.workloads import models

Outcome = Literal["ok", "refused"]
# One example running longer than this is a hang: a loader reads a small file in milliseconds; the
# slowest public case (a server search) predicts in under 2 s, and a case's simulations have a
# budget of 5 s as estimated before they start (validate.CASE_SECONDS).
LOADER_SECONDS, HEAVY_SECONDS = 10.0, 60.0


def outcome(run: Callable[[], object]) -> Outcome:
    """ "ok" or "refused" (a TapeoutError); any other exception propagates: a bug."""
    try:
        run()
    except TapeoutError:
        return "refused"
    return "ok"


def _write(folder: Path, file: tuple[str, bytes]) -> Path:
    suffix, content = file
    path = folder / f"input{suffix}"
    path.write_bytes(content)
    return path


# ---- the loaders ---------------------------------------------------------------------------
def _use_chip(chip: ChipSpec) -> None:
    """What `tapeout cost` does with a chip once loaded; its JSON has no NaN or Infinity."""
    if chip.vendor == "tapeout":
        check_design(chip)
    json.dumps(unit_cost(chip, volume=1000).as_dict(), allow_nan=False)
    hash(chip)


def chip_mapping(folder: Path, data: Any) -> Outcome:
    return outcome(lambda: _use_chip(catalog.chip_from_mapping(data, "fuzz")))


def chip_reference(folder: Path, ref: Any) -> Outcome:
    return outcome(lambda: _use_chip(catalog.resolve_chip(ref, "fuzz", "chip")))


def chip_file(folder: Path, file: tuple[str, bytes]) -> Outcome:
    return outcome(lambda: _use_chip(catalog.load_chip_file(_write(folder, file))))


def design_mapping(folder: Path, data: Any) -> Outcome:
    return outcome(lambda: _use_chip(catalog.chip_from_mapping(expand_design(data, "fuzz"), "fuzz")))


def chip_cost(folder: Path, request: tuple[Any, Any, Any, Any]) -> Outcome:
    """`cost(chip, volume=, region=, levy=)` of a catalog id or a design file."""
    chip, volume, region, levy = request
    ref = chip if isinstance(chip, str) else str(_write(folder, chip))
    return outcome(lambda: json.dumps(cost(ref, volume=volume, region=region, levy=levy), allow_nan=False))


def model_reference(folder: Path, ref: Any) -> Outcome:
    return outcome(lambda: models.resolve_model(ref, "fuzz", "model").param_count())


def config_json(folder: Path, file: tuple[str, bytes]) -> Outcome:
    return outcome(lambda: models.load_config_json(_write(folder, file)).param_count())


def case_mapping(folder: Path, data: Any) -> Outcome:
    return outcome(lambda: parse_case(data, "fuzz", 0))


def case_prediction(folder: Path, data: Any) -> Outcome:
    """A case parsed and predicted: `predict` turns a TapeoutError into an unsupported result,
    so nothing may escape it at all."""
    return outcome(lambda: predict(parse_case(data, "fuzz", 0)))


def case_file(folder: Path, file: tuple[str, bytes]) -> Outcome:
    return outcome(lambda: load_cases(_write(folder, file)))


def trace(folder: Path, file: tuple[str, bytes]) -> Outcome:
    return outcome(lambda: Requests.from_trace(_write(folder, file)))


def demand_mapping(folder: Path, data: Any) -> Outcome:
    return outcome(lambda: parse_demand(data, "fuzz"))


def demand_file(folder: Path, file: tuple[str, bytes]) -> Outcome:
    return outcome(lambda: load_demand(_write(folder, file)))


def data_file(folder: Path, file: tuple[str, bytes]) -> Outcome:
    return outcome(lambda: load_data_file(_write(folder, file)))


# ---- the command line ------------------------------------------------------------------------
class CommandFailed(AssertionError):
    """The command broke its contract; the message has the arguments and what it printed."""


def run_command(args: list[str], folder: Path | None = None) -> tuple[int, str, str]:
    """Run `tapeout ARGS` in this process: (exit status, stdout, stderr). `{demand}`, `{cases}`
    and `{trace}` in the arguments name small files written into `folder`."""
    if folder is not None:
        for key, text in fs.COMMAND_FILES.items():
            path = folder / f"command-{key}{fs.SUFFIXES[key]}"
            if not path.exists():
                path.write_text(text)
            args = [a.replace(f"{{{key}}}", str(path)) for a in args]
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["tapeout", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        set_max_file_mb(None)  # --max-file-mb holds for the process: put the default back
    return code, out.getvalue(), err.getvalue()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} in the JSON output")


def _broken(args: list[str], code: int, out: str, err: str) -> str:
    """What the command did wrong, or ""."""
    if code not in (0, 2):
        return f"exit status {code}"
    if "Traceback" in err:
        return "a traceback"
    if "--json" not in args:
        return ""
    try:
        if code == 0:
            json.loads(out, parse_constant=_no_constant)
            return ""
        error = json.loads(err)
    except ValueError as exc:
        return f"not JSON: {exc}"
    return "" if set(error) == {"error"} and err.count("\n") == 1 else "stderr is not one JSON object"


def command_line(folder: Path, args: list[str]) -> Outcome:
    code, out, err = run_command(args, folder)
    problem = _broken(args, code, out, err)
    if problem:
        raise CommandFailed(
            f"tapeout {' '.join(args)}: {problem}\nstdout: {out[:2000]}\nstderr: {err[:2000]}"
        )
    return "ok" if code == 0 else "refused"


# ---- the registry ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Property:
    strategy: st.SearchStrategy[Any]
    check: Callable[[Path, Any], Outcome]
    heavy: bool = False  # a prediction or a command run each time: fewer examples

    @property
    def seconds(self) -> float:
        """The time limit of one example."""
        return HEAVY_SECONDS if self.heavy else LOADER_SECONDS


PROPERTIES: dict[str, Property] = {
    "chip mapping": Property(fs.chip_mappings(), chip_mapping),
    "chip reference": Property(fs.chip_refs(), chip_reference),
    "chip file": Property(fs.files(fs.chip_mappings()), chip_file),
    "design mapping": Property(fs.design_mappings(), design_mapping),
    "design file, cost": Property(fs.cost_requests(), chip_cost),
    "model reference": Property(fs.model_refs(), model_reference),
    "config.json": Property(fs.files(fs.model_configs(), (".json",)), config_json),
    "case mapping": Property(fs.case_mappings(), case_mapping),
    "case prediction": Property(fs.case_mappings(), case_prediction, heavy=True),
    "case file": Property(fs.case_files(), case_file),
    "trace": Property(fs.trace_files(), trace),
    "demand mapping": Property(fs.demand_mappings(), demand_mapping),
    "demand file": Property(fs.files(fs.demand_mappings()), demand_file),
    "data file": Property(fs.data_files(), data_file),
    "command line": Property(fs.command_lines(), command_line, heavy=True),
}


# ---- hangs ---------------------------------------------------------------------------------
class Hang(BaseException):
    """An example ran past its time limit (a BaseException: no `except Exception` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the block after `seconds` (in the main thread, where SIGALRM exists)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"an example ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
