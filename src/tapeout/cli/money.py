"""Silicon cost and fleet planning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tapeout.cli.app import JsonFlag, app, busy, console, num, print_json, table_of, text, usd


@app.command("cost")
def cost_cmd(
    chip: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A catalog id or a design file (or give --hardware).")
    ] = None,
    hardware: Annotated[
        str | None, typer.Option("--hardware", help="A catalog id or a design file.", show_default=False)
    ] = None,
    volume: Annotated[
        int | None,
        typer.Option(
            "--volume", help="Units our design's NRE is spread over \\[default: 200000].", show_default=False
        ),
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
    from tapeout.errors import TapeoutError

    if chip is not None and hardware is not None and chip != hardware:
        raise TapeoutError(f"two chips given: {chip!r} and --hardware {hardware!r}; give one")
    ref = chip or hardware
    if ref is None:
        raise TapeoutError("give the chip: `tapeout cost ID` or `tapeout cost --hardware ID`")
    out = cost(ref, volume=volume, region=region, levy=levy)
    if as_json:
        print_json(out)
        return
    _print_cost(out)


def _print_cost(out: dict[str, Any]) -> None:
    published = out["published_die_area_mm2"]
    console.print(
        f"{text(out['name'])} ({text(out['id'])}), {out['process_node']}: die {num(out['die_area_mm2'], 'mm^2')} "
        "modelled" + (f", {num(published, 'mm^2')} published" if published else ", no published area")
    )
    console.print(table_of("area per die", [out["area_mm2"]], dict.fromkeys(out["area_mm2"], "mm^2")))
    console.print(
        f"dies per wafer {num(out['dies_per_wafer'])}, yield {num(100 * out['yield'])} %, "
        f"{out['dies_per_package']} die(s) per package"
    )
    cost_row = {k: usd(v) for k, v in {**out["cost_usd"], "total": out["unit_cost_usd"]}.items()}
    console.print(table_of("unit cost", [cost_row]))
    if out["volume"]:
        console.print(f"NRE {usd(out['nre_usd'])} over {num(out['volume'])} units")
    p = out["power_w"]
    console.print(
        f"power at full load and nominal clock: compute {num(p['compute'], 'W')} + memory {num(p['memory'], 'W')} "
        f"+ idle {num(p['idle'], 'W')} = {num(p['full_load'], 'W')}, against a budget (TDP) of "
        f"{num(p['budget'], 'W')}: a full matrix load runs at {num(100 * p['sustained_clock'])} % of the clock "
        "(power goes as the cube of the clock)"
    )
    if out["market_price"]:
        m = out["market_price"]
        where = f", {text(m['region'])}" if "region" in m else ""
        console.print(f"market price: {usd(m['usd'])} ({m['date']}{where}, {text(m['kind'])})")
        if out["levy"]:
            console.print(f"with a {num(100 * out['levy'])} % levy: {usd(out['price_with_levy_usd'])}")


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

    with busy("planning: capacities of every candidate", as_json):
        out = plan(load_demand(demand), workers=workers).as_dict()
    if as_json:
        print_json(out)
        return
    for d in out["demands"]:
        price_key = next(k for k in d if k.startswith("usd_per_"))
        table = Table(title=f"{text(d['demand'])} ({d['kind']}): {num(d['rate'])} {d['unit']}")
        for col in ("candidate", "chips", "TCO", price_key.replace("usd_per_", "$ per ").replace("_", " "),
                    f"{d['unit']} per chip", "plan"):  # fmt: skip
            table.add_column(col, justify="left" if col in ("candidate", "plan") else "right")
        for a in d["alternatives"]:
            if "error" in a:
                table.add_row(
                    text(a["candidate"]), "-", "-", "-", "-", f"[yellow]{text(a['error'])}[/yellow]"
                )
                continue
            plan_s = " ".join(f"{k} {v}" for k, v in a["plan"].items() if k in _PLAN_KEYS and v != 1)
            table.add_row(text(a["candidate"]), num(a["chips"]), usd(a["tco_usd"]), usd(a[price_key]),
                          num(a["capacity_per_chip"]), plan_s)  # fmt: skip
        console.print(table)
        fleet = ", ".join(f"{num(f['chips'])} x {text(f['candidate'])}" for f in d["fleet"])
        console.print(f"chosen: {fleet}: TCO {usd(d['tco_usd'])}")
        for b in d["break_even"]:
            if b["volume"] is None:
                console.print(f"{text(b['candidate'])} against {text(b['against'])}: {text(b['note'])}")
            else:
                console.print(
                    f"{text(b['candidate'])} breaks even with {text(b['against'])} at a volume of {num(b['volume'])} "
                    f"units (NRE {usd(b['nre_usd'])}; this fleet is {num(b['fleet_chips'])} chips)"
                )
    chips = Table(title="fleet by chip type")
    for col in ("candidate", "chips", "TCO", "price (levy incl.)", "demands"):
        chips.add_column(col)
    prices = {c["candidate"]: c for c in out["candidates"]}
    for c in out["chips"]:
        served = ", ".join(f"{text(k)} {num(v)}" for k, v in c["demands"].items())
        chips.add_row(text(c["candidate"]), num(c["chips"]), usd(c["tco_usd"]),
                      usd(prices[c["candidate"]]["price_with_levy_usd"]), served)  # fmt: skip
    console.print(chips)
    for c in out["candidates"]:
        console.print(f"[dim]{text(c['candidate'])} price: {text(c['price_source'])}[/dim]")
    console.print(f"total TCO {usd(out['total_tco_usd'])} over {num(out['tco_assumptions']['years'])} years, "
                  f"{num(out['total_chips'])} chips")  # fmt: skip
