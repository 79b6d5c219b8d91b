"""`tapeout compile`: a PyTorch model (a factory `MODULE:FACTORY` returning `(model,
example_inputs)`, or a catalog model built with random weights) compiled for a chip: its time,
its per-op table, its program file. Registered on the app by `cli.app`; imports nothing of the
command line so that registration has no cycle, and torch only inside the command."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tapeout.errors import TapeoutError

INSTALL = "the compiler needs PyTorch and transformers: pip install 'tapeout[torch]'"


def compile_command(
    factory: Annotated[
        str | None, typer.Argument(help="MODULE:FACTORY, a function returning (model, example_inputs).")
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="A chip id: a catalog chip or one of our designs.")
    ] = "tapeout-i1",
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16, fp8 or int8.")] = "bf16",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A catalog model id (Llama, Mixtral, DeepSeek-V3 or DLRM) built with random weights.",
        ),
    ] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="Keep this many layers of --model.")] = None,
    batch: Annotated[
        int, typer.Option("--batch", help="Sequences (samples of a DLRM) of --model's example input.")
    ] = 1,
    seq: Annotated[int, typer.Option("--seq", help="Tokens per sequence of --model's example input.")] = 128,
    software: Annotated[
        str | None, typer.Option("--software", help="NAME[@VERSION] of the figures to use.")
    ] = None,
    tp: Annotated[
        int, typer.Option("--tp", help="Time one chip of N running the program tensor-parallel.")
    ] = 1,
    show_report: Annotated[bool, typer.Option("--report", help="Print the per-op table.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the program to this JSON file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Compile a PyTorch model for a chip: time, FLOPs, fallbacks, memory; the per-op table with --report."""
    try:
        from tapeout.compiler.model import compile as compile_model
        from tapeout.compiler.model import estimate_of, report
    except ImportError as exc:
        raise TapeoutError(f"{INSTALL} ({exc})") from exc
    net, inputs = _model(factory, model, layers, batch, seq)
    compiled = compile_model(net, inputs, target=target, precision=precision, software=software)
    program = compiled.program()
    if out is not None:
        program.save(out)
    est = estimate_of(program, tp=tp, software=software)
    if as_json:
        data: dict[str, Any] = {"estimate": est.as_dict(), "fallbacks": [s.name for s in program.fallbacks()]}
        if show_report:
            data["program"] = program.to_json()
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if show_report:
        print(report(program))
    one = f", one chip of {tp} (tensor-parallel)" if tp > 1 else ""
    print(f"{program.target}, {precision}{one}: {est.time_s * 1e3:,.4f} ms, {est.flops / 1e9:,.3f} GFLOP, "
          f"{est.kernels} kernels, {est.fallbacks} fallbacks ({est.fallback_s * 1e3:,.4f} ms on the host)")  # fmt: skip
    if tp > 1:
        listed = " (--report lists them)" if est.unplaced and not show_report else ""
        print(
            f"collectives {est.communication_s * 1e3:,.4f} ms; {est.unplaced} ops whole on every chip{listed}"
        )
    if out is not None:
        print(f"program written to {out}")


def _model(
    factory: str | None, model: str | None, layers: int | None, batch: int, seq: int
) -> tuple[Any, Any]:
    if (factory is None) == (model is None):
        raise TapeoutError("give either MODULE:FACTORY or --model CATALOG_ID (one of them)")
    if model is not None:
        try:
            from tapeout.compiler.catalog import catalog_model
        except ImportError as exc:
            raise TapeoutError(f"{INSTALL} ({exc})") from exc
        return catalog_model(model, layers=layers, batch=batch, seq=seq)
    assert factory is not None
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise TapeoutError(f"field 'factory': expected MODULE:FACTORY, got {factory!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TapeoutError(f"field 'factory': cannot load {factory!r} ({exc})") from exc
    result = fn()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TapeoutError(f"field 'factory': {factory} must return (model, example_inputs)")
    return result
