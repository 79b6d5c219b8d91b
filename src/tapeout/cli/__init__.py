"""The command surface: a thin layer over the Python API (`tapeout.api` and the modules it names).

Commands import the work they call inside their bodies: `tapeout --help` and the catalog
commands start in a fraction of the time the simulators take to import.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from tapeout.cli import catalog, money, validation, workloads  # noqa: F401  (the commands register on `app`)
from tapeout.cli.app import app
from tapeout.errors import TapeoutError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except TapeoutError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
