"""The command surface: a thin layer over the Python API (`tapeout.api` and the modules it names).

Commands import the work they call inside their bodies: `tapeout --help` and the catalog
commands start in a fraction of the time the simulators take to import.

Every failure is one line on stderr and exit status 2 (a usage error or bad input), 130 when
interrupted; with `--json` the line is a JSON object `{"error": "..."}`. No traceback reaches a
user for bad input.
"""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.markup import escape

from tapeout.cli import catalog, money, validation, workloads  # noqa: F401  (the commands register on `app`)
from tapeout.cli.app import app
from tapeout.errors import TapeoutError

__all__ = ["app", "main"]


def _fail(message: str, as_json: bool, code: int = 2) -> None:
    if as_json:
        sys.stderr.write(json.dumps({"error": message}) + "\n")
    else:
        Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main() -> None:
    as_json = "--json" in sys.argv[1:]
    try:
        app(standalone_mode=False)
    except TapeoutError as exc:
        _fail(str(exc), as_json)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", as_json, 130)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        # The command-line parser's usage errors (a missing option, a value of the wrong type)
        # carry `format_message` and `exit_code`; typer vendors that parser, so they are
        # recognised by shape. Anything else is a bug and keeps its traceback.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if not as_json and hasattr(exc, "show"):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        _fail(exc.format_message(), as_json, exc.exit_code)
