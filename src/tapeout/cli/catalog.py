"""The hardware and model catalogs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tapeout.cli.app import JsonFlag, console, hardware_app, models_app, print_json, table_of
from tapeout.hardware import all_chips, get_chip
from tapeout.workloads.models import all_models, get_model


@hardware_app.command("list")
def hardware_list(as_json: JsonFlag = False) -> None:
    """Every chip in the catalog."""
    rows = [c.summary() for c in all_chips()]
    print_json(rows) if as_json else console.print(table_of("hardware", rows))


@hardware_app.command("show")
def hardware_show(chip_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """One chip with every field and its sources."""
    chip = get_chip(chip_id)
    data = chip.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{chip.name} ({chip.id})", show_header=False)
    for key, value in data.items():
        if key not in ("sources", "notes"):
            table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    console.print(table)
    for key, src in chip.sources.items():
        console.print(f"[dim]{key}: {src}[/dim]")


# ---- models -------------------------------------------------------------------------------
@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Every model in the catalog with its derived parameter count."""
    rows = [m.summary() for m in all_models()]
    print_json(rows) if as_json else console.print(table_of("models", rows))


@models_app.command("show")
def models_show(model_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """One model: its config, derived parameter count and sources."""
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
    table = Table(title=f"{m.name} ({m.id})", show_header=False)
    for key, value in data.items():
        table.add_row(
            key,
            json.dumps(value)
            if isinstance(value, dict | list)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value),
        )
    console.print(table)
