"""The hardware and model catalogs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tapeout.cli.app import JsonFlag, console, hardware_app, models_app, num, print_json, table_of, text


@hardware_app.command("list")
def hardware_list(as_json: JsonFlag = False) -> None:
    """Every chip in the catalog."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.hardware import all_chips

    rows = [c.summary() for c in all_chips()]
    print_json(rows) if as_json else console.print(table_of("hardware", rows))


@hardware_app.command("show")
def hardware_show(
    chip_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A catalog id (or give --hardware).")
    ] = None,
    hardware: Annotated[
        str | None, typer.Option("--hardware", help="A catalog id.", show_default=False)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One chip with every field and its sources."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.errors import TapeoutError
    from tapeout.hardware import get_chip

    if chip_id is not None and hardware is not None and chip_id != hardware:
        raise TapeoutError(f"two chips given: {chip_id!r} and --hardware {hardware!r}; give one")
    ref = chip_id or hardware
    if ref is None:
        raise TapeoutError("give the chip: `tapeout hardware show ID` or `--hardware ID`")
    chip = get_chip(ref)
    data = chip.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    table = Table(title=text(f"{chip.name} ({chip.id})"), show_header=False)
    for key, value in data.items():
        if key not in ("sources", "notes"):
            table.add_row(key, text(json.dumps(value) if isinstance(value, dict | list) else str(value)))
    console.print(table)
    for key, src in chip.sources.items():
        console.print(f"[dim]{text(key)}: {text(src)}[/dim]")


# ---- models -------------------------------------------------------------------------------
@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Every model in the catalog with its derived parameter count."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.workloads.models import all_models

    rows = [m.summary() for m in all_models()]
    print_json(rows) if as_json else console.print(table_of("models", rows))


@models_app.command("show")
def models_show(model_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """One model: its config, derived parameter count and sources."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.workloads.models import get_model

    m = get_model(model_id)
    data = {
        **m.summary(),
        "active_params": getattr(m.config, "active_param_count", m.config.param_count)(),
        "source": m.source,
        "published_params_source": m.published_params_source,
        "config": m.config.model_dump(mode="json", exclude_none=True),
    }
    if as_json:
        print_json(data)
        return
    table = Table(title=text(f"{m.name} ({m.id})"), show_header=False)
    for key, value in data.items():
        shown = (
            json.dumps(value)
            if isinstance(value, dict | list)
            else num(value)
            if isinstance(value, int)
            else value
        )
        table.add_row(key, text(shown))
    console.print(table)
