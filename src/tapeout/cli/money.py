"""Silicon cost and fleet planning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tapeout.cli.app import JsonFlag, app, console, print_json, table_of


@app.command("cost")
def cost_cmd(
    chip: Annotated[str, typer.Argument(metavar="ID", help="A catalog id, or a design file.")],
    volume: Annotated[
        int | None, typer.Option("--volume", help="Units our design's NRE is spread over [default: 200000].")
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Market of the price: an ISO 3166 code such as CN.")
    ] = None,
    levy: Annotated[
        float, typer.Option("--levy", help="Export levy on the price, a fraction (0.25 = 25 %).")
    ] = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Die area, yield, unit cost and power of a chip, modelled from its architecture."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.cost.api import cost

    out = cost(chip, volume=volume, region=region, levy=levy)
    if as_json:
        print_json(out)
        return
    published = out["published_die_area_mm2"]
    console.print(
        f"{out['name']} ({out['id']}), {out['process_node']}: die {out['die_area_mm2']:,.0f} mm^2 modelled"
        + (f", {published:,.0f} published" if published else ", no published area")
    )
    console.print(table_of("area per die, mm^2", [out["area_mm2"]]))
    console.print(
        f"dies per wafer {out['dies_per_wafer']:.1f}, yield {100 * out['yield']:.1f} %, "
        f"{out['dies_per_package']} die(s) per package"
    )
    console.print(table_of("unit cost, US$", [{**out["cost_usd"], "total": out["unit_cost_usd"]}]))
    if out["volume"]:
        console.print(f"NRE ${out['nre_usd'] / 1e6:,.1f}M over {out['volume']:,} units")
    console.print(table_of("power at full load, W", [out["power_w"]]))
    if out["market_price"]:
        m = out["market_price"]
        where = f", {m['region']}" if "region" in m else ""
        console.print(f"market price: ${m['usd']:,.0f} ({m['date']}{where}, {m['kind']})")
        if out["levy"]:
            console.print(f"with a {100 * out['levy']:g} % levy: ${out['price_with_levy_usd']:,.0f}")


_PLAN_KEYS = ("tp", "pp", "ep", "cp", "dp", "group_chips", "sharding")


@app.command("plan")
def plan_cmd(
    demand: Annotated[Path, typer.Argument(help="A demand file: candidates, demands, TCO assumptions.")],
    workers: Annotated[int, typer.Option("--workers", help="Processes for the capacity estimates.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """The fleet of lowest TCO that meets every demand, with the cost on each candidate alone."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.plan import load_demand, plan

    out = plan(load_demand(demand), workers=workers).as_dict()
    if as_json:
        print_json(out)
        return
    for d in out["demands"]:
        price_key = next(k for k in d if k.startswith("usd_per_"))
        table = Table(title=f"{d['demand']} ({d['kind']}): {d['rate']:,.4g} {d['unit']}")
        for col in ("candidate", "chips", "TCO $M", price_key.replace("usd_per_", "$ per ").replace("_", " "),
                    "per chip", "plan"):  # fmt: skip
            table.add_column(col, justify="left" if col in ("candidate", "plan") else "right")
        for a in d["alternatives"]:
            if "error" in a:
                table.add_row(a["candidate"], "-", "-", "-", "-", f"[yellow]{a['error']}[/yellow]")
                continue
            plan_s = " ".join(f"{k} {v}" for k, v in a["plan"].items() if k in _PLAN_KEYS and v != 1)
            table.add_row(a["candidate"], f"{a['chips']:,}", f"{a['tco_usd'] / 1e6:,.1f}", f"{a[price_key]:,.4g}",
                          f"{a['capacity_per_chip']:,.4g}", plan_s)  # fmt: skip
        console.print(table)
        fleet = ", ".join(f"{f['chips']:,} x {f['candidate']}" for f in d["fleet"])
        console.print(f"chosen: {fleet}: TCO ${d['tco_usd']:,.0f}")
        for b in d["break_even"]:
            if b["volume"] is None:
                console.print(f"{b['candidate']} against {b['against']}: {b['note']}")
            else:
                console.print(
                    f"{b['candidate']} breaks even with {b['against']} at a volume of {b['volume']:,} units "
                    f"(NRE ${b['nre_usd']:,.0f}; this fleet is {b['fleet_chips']:,} chips)"
                )
    chips = Table(title="fleet by chip type")
    for col in ("candidate", "chips", "TCO $M", "price $ (levy incl.)", "demands"):
        chips.add_column(col)
    prices = {c["candidate"]: c for c in out["candidates"]}
    for c in out["chips"]:
        served = ", ".join(f"{k} {v:,}" for k, v in c["demands"].items())
        chips.add_row(c["candidate"], f"{c['chips']:,}", f"{c['tco_usd'] / 1e6:,.1f}",
                      f"{prices[c['candidate']]['price_with_levy_usd']:,.0f}", served)  # fmt: skip
    console.print(chips)
    for c in out["candidates"]:
        console.print(f"[dim]{c['candidate']} price: {c['price_source']}[/dim]")
    console.print(f"total TCO ${out['total_tco_usd']:,.0f} over {out['tco_assumptions']['years']:g} years, "
                  f"{out['total_chips']:,} chips")  # fmt: skip
