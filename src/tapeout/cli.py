"""The command surface: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tapeout.errors import TapeoutError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Design AI chips, predict workloads, price fleets.",
)
hardware_app = typer.Typer(no_args_is_help=True, help="The hardware catalog.")
models_app = typer.Typer(no_args_is_help=True, help="The model catalog.")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
console = Console()


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


# ---- hardware -----------------------------------------------------------------------------
@hardware_app.command("list")
def hardware_list(as_json: JsonFlag = False) -> None:
    """Every chip in the catalog."""
    from tapeout.hardware import all_chips

    rows = [c.summary() for c in all_chips()]
    _print_json(rows) if as_json else console.print(_table("hardware", rows))


@hardware_app.command("show")
def hardware_show(chip_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """One chip with every field and its sources."""
    from tapeout.hardware import get_chip

    chip = get_chip(chip_id)
    data = chip.model_dump(mode="json")
    if as_json:
        _print_json(data)
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
    from tapeout.workloads.models import all_models

    rows = [m.summary() for m in all_models()]
    _print_json(rows) if as_json else console.print(_table("models", rows))


@models_app.command("show")
def models_show(model_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """One model: its config, derived parameter count and sources."""
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
        _print_json(data)
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


# ---- validation ---------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


@app.command()
def validate(
    file: Annotated[
        Path | None,
        typer.Argument(help="A case file (schema tapeout-validation/1); default: the bundled public cases."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Predict every case of a validation file and report the errors."""
    from tapeout.validate import PUBLIC_CASES, predict_all, report

    results = predict_all(file or PUBLIC_CASES)
    if as_json:
        _print_json(report(results))
        return
    table = Table(title=f"validation: {file or 'bundled public cases'}")
    for col in ("case", "kind", "software", "metric", "measured", "predicted", "error"):
        right = col in ("measured", "predicted", "error")
        table.add_column(col, justify="right" if right else "left", overflow="fold", no_wrap=col == "error")
    reasons: dict[str, str] = {}
    for r in results:
        err = r.error
        if err is None:
            reasons[r.kind] = r.reason or ""
            err_s = "[yellow]unsupported[/yellow]"
        else:
            color = "green" if abs(err) <= 0.10 else "yellow" if abs(err) <= 0.25 else "red"
            err_s = f"[{color}]{100 * err:+.1f}%[/{color}]"
        table.add_row(r.id, r.kind, r.software or "-", r.metric, _fmt(r.measured), _fmt(r.predicted), err_s)
    console.print(table)
    for kind, reason in reasons.items():
        console.print(f"[yellow]unsupported[/yellow] {kind}: {reason}")
    s = report(results)["summary"]
    for group, title in (("by_kind", "kind"), ("by_confidence", "confidence")):
        kinds = Table(title=f"by {title}")
        for col in (title, "cases", "MAPE", "unsupported"):
            kinds.add_column(col)
        for kind, k in s[group].items():
            kinds.add_row(kind, str(k["n"]), f"{100 * k['mape']:.1f}%", str(k.get("unsupported", 0)))
        console.print(kinds)
    console.print(
        f"MAPE {100 * s['mape']:.1f}% over {s['n']} cases (an unsupported case counts as 100 %); "
        f"within 10 %: {100 * s['within_10pct']:.0f}%, within 25 %: {100 * s['within_25pct']:.0f}%; "
        f"unsupported: {s['unsupported']}"
    )


@app.command()
def calibrate(
    cases: Annotated[
        Path | None, typer.Option(help="Case file to fit on; default: the bundled public cases.")
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Write the fitted figures into calibration.yaml.")
    ] = False,
    serving: Annotated[
        bool,
        typer.Option("--serving", help="Also report held-out errors of the LLM serving cases (minutes)."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-derive the efficiency figures from the public cases, with held-out errors."""
    from tapeout.calibrate import calibrate as fit
    from tapeout.validate import PUBLIC_CASES

    result = fit(cases or PUBLIC_CASES, write=write, serving=serving)
    if as_json:
        _print_json(result)
        return
    table = Table(title="calibration figures")
    for col in ("figure", "stack", "fitted", "in file", "cases"):
        table.add_column(col)
    for f in result["figures"]:
        table.add_row(f["figure"], f["stack"], f"{f['fitted']:.3f}", f"{f['current']:.3f}", str(f["n"]))
    console.print(table)
    loo = Table(title="held-out (leave-one-out) error per case")
    for col in ("case", "in-sample", "held-out"):
        loo.add_column(col)
    for c in result["cases"]:
        loo.add_row(c["id"], f"{100 * c['in_sample']:+.1f}%", f"{100 * c['held_out']:+.1f}%")
    console.print(loo)
    for kind, k in result["by_kind"].items():
        console.print(
            f"{kind}: {k['n']} cases, MAPE in-sample {100 * k['mape_in_sample']:.1f}%, "
            f"held-out {100 * k['mape_held_out']:.1f}%"
        )
    if write:
        console.print("written to calibration.yaml")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="A model catalog id or a config.json path.")],
    hardware: Annotated[str, typer.Option("--hardware", help="A hardware catalog id.")],
    chips: Annotated[int, typer.Option("--chips", help="Chips in the system.")] = 1,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel ways.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline stages.")] = 1,
    ep: Annotated[int, typer.Option("--ep", help="Expert-parallel ways.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="Weights and activations.")] = "bf16",
    kv_precision: Annotated[str | None, typer.Option("--kv-precision", help="KV cache.")] = None,
    input_len: Annotated[float, typer.Option("--input-len", help="Prompt tokens per request.")] = 512,
    output_len: Annotated[float, typer.Option("--output-len", help="Output tokens per request.")] = 256,
    rate: Annotated[float | None, typer.Option("--rate", help="Poisson requests/s, whole system.")] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="JSONL or CSV: arrival_s,input_len,output_len.")
    ] = None,
    requests: Annotated[int, typer.Option("--requests", help="Requests to simulate.")] = 1000,
    max_batch: Annotated[
        int | None, typer.Option("--max-batch", help="Sequences in flight per replica.")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Token budget of one iteration.")] = 8192,
    policy: Annotated[str, typer.Option("--policy", help="Scheduling policy.")] = "continuous",
    ttft_limit: Annotated[
        float | None, typer.Option("--ttft-limit", help="TTFT limit for goodput, s.")
    ] = None,
    tpot_limit: Annotated[
        float | None, typer.Option("--tpot-limit", help="TPOT limit for goodput, s.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Simulate serving a model: throughput, latency percentiles, memory per chip, limiters."""
    from rich.progress import BarColumn, Progress, TextColumn

    from tapeout.sim.api import serve as run_serve

    show = not as_json and sys.stderr.isatty() and requests >= 2000
    bar = Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed} iterations"),
                   console=Console(stderr=True), transient=True, disable=not show)  # fmt: skip
    with bar:
        task = bar.add_task("serve", total=None)
        out = run_serve(
            model, hardware, chips, tp=tp, pp=pp, ep=ep, precision=precision, kv_precision=kv_precision,
            input_len=input_len, output_len=output_len, rate=rate, trace=trace, requests=requests,
            max_batch=max_batch, max_tokens=max_tokens, policy=policy, ttft_limit_s=ttft_limit,
            tpot_limit_s=tpot_limit, progress=(lambda n: bar.update(task, completed=n)) if show else None,
        )  # fmt: skip
    if as_json:
        _print_json(out)
        return
    p = out["plan"]
    console.print(
        f"{out['model']} on {chips} x {out['hardware']}: {p['replicas']} replica(s) of tp {p['tp']} x pp {p['pp']}"
        f" x ep {p['ep']}, {p['precision']} weights, {p['kv_precision']} KV, policy {out['policy']}"
    )
    console.print(
        f"throughput {out['tokens_per_s']:,.0f} output tokens/s, {out['requests_per_s']:.3g} requests/s"
        f" ({out['requests']} requests in {out['duration_s']:.3g} s simulated, {out['preemptions']} preemptions)"
    )
    if ttft_limit is not None or tpot_limit is not None:
        console.print(f"goodput {out['goodput_tokens_per_s']:,.0f} output tokens/s within the limits")
    lat = Table(title="latency (s)")
    for col in ("", "mean", "p50", "p90", "p99"):
        lat.add_column(col, justify="right")
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")):
        lat.add_row(name, *(f"{out[key][q]:.4g}" for q in ("mean", "p50", "p90", "p99")))
    console.print(lat)
    mem = out["memory_per_chip"]
    console.print(
        f"memory per chip: weights {mem['weights_gb']:.1f} GB, activations {mem['activations_gb']:.1f} GB, "
        f"runtime {mem['reserve_gb']:.1f} GB, KV cache {mem['kv_cache_gb']:.1f} GB ({mem['kv_tokens']:,} tokens) "
        f"of {mem['capacity_gb']:g} GB"
    )
    for phase, ph in out["phases"].items():
        size = f"{ph['tokens']} tokens" if phase == "prefill" else f"{ph['sequences']} sequences"
        console.print(
            f"{phase}: one iteration of {size} takes {1e3 * ph['time_s']:.3g} ms, {ph['bound']}-bound"
        )


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="A model catalog id or a config.json path.")],
    hardware: Annotated[str, typer.Option("--hardware", help="A hardware catalog id.")],
    chips: Annotated[int, typer.Option("--chips", help="Chips in the system.")],
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="Sequences per step.")],
    tp: Annotated[int | None, typer.Option("--tp", help="Default 1.")] = None,
    pp: Annotated[int | None, typer.Option("--pp", help="Default 1.")] = None,
    dp: Annotated[int | None, typer.Option("--dp", help="Default: chips / (tp x pp x cp).")] = None,
    cp: Annotated[int | None, typer.Option("--cp", help="Default 1.")] = None,
    ep: Annotated[int | None, typer.Option("--ep", help="Default 1.")] = None,
    vpp: Annotated[int | None, typer.Option("--vpp", help="Interleaved chunks per stage; default 1.")] = None,
    micro_batch: Annotated[int | None, typer.Option("--micro-batch", help="Default 1.")] = None,
    sequence_parallel: Annotated[bool, typer.Option("--sequence-parallel")] = False,
    tp_overlap: Annotated[
        bool, typer.Option("--tp-overlap", help="Overlap sequence-parallel communication with the matmuls.")
    ] = False,
    ep_overlap: Annotated[
        bool, typer.Option("--ep-overlap", help="Expert all-to-alls under another micro-batch's compute.")
    ] = False,
    attention: Annotated[str, typer.Option("--attention", help="flash (fused) or unfused.")] = "flash",
    recompute: Annotated[
        str | None, typer.Option("--recompute", help="none (default), selective or full.")
    ] = None,
    zero: Annotated[int | None, typer.Option("--zero", help="ZeRO stage 0-3; default 0.")] = None,
    zero_shard: Annotated[
        int | None,
        typer.Option(
            "--zero-shard", help="Shard ZeRO over groups of N data-parallel ranks (hybrid sharding)."
        ),
    ] = None,
    precision: Annotated[str, typer.Option("--precision", help="Matmul precision.")] = "bf16",
    do_search: Annotated[
        bool,
        typer.Option("--search", help="Find the fastest plan that fits; plan flags given pin the search."),
    ] = False,
    budget: Annotated[int, typer.Option("--budget", help="Plans the search may try.")] = 200_000,
    chips_per_node: Annotated[int | None, typer.Option("--chips-per-node")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Predict a training step: time, tokens/s, MFU, breakdown and memory per chip."""
    from tapeout.sim.train_api import train as run_train

    out = run_train(
        model, hardware, chips, seq_len=seq_len, global_batch=global_batch, tp=tp, pp=pp, dp=dp, cp=cp,
        ep=ep, vpp=vpp, micro_batch=micro_batch, sequence_parallel=sequence_parallel or None, tp_overlap=tp_overlap,
        ep_overlap=ep_overlap, attention=attention, recompute=recompute, zero=zero, zero_shard=zero_shard, precision=precision, search=do_search, budget=budget, chips_per_node=chips_per_node,
    )  # fmt: skip
    if as_json:
        _print_json(out)
        return
    p = out["plan"]
    console.print(
        f"{out['model']} on {chips} x {out['hardware']}: tp {p['tp']} pp {p['pp']} dp {p['dp']} cp {p['cp']} "
        f"ep {p['ep']} vpp {p['vpp']}, micro-batch {p['micro_batch']} ({p['micro_batches']} per step), "
        f"sequence parallel {p['sequence_parallel']}, tp overlap {p['tp_overlap']}, ep overlap {p['ep_overlap']}, "
        f"{p['attention']} attention, recompute {p['recompute']}, ZeRO {p['zero']}"
        + (f" sharded over {p['zero_shard']} ranks" if p["zero_shard"] else "")
    )
    if "search" in out:
        s = out["search"]
        console.print(
            f"search: {s['tried']} plans tried, {s['feasible']} fit"
            + ("" if s["exhausted"] else " (budget hit)")
        )
    console.print(
        f"step {out['step_time_s']:.4g} s, {out['tokens_per_s']:,.0f} tokens/s, MFU {100 * out['mfu']:.1f}%, "
        f"HFU {100 * out['hfu']:.1f}%"
    )
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.3g} s" for k, v in out["breakdown_s"].items())
    console.print(f"time: {parts}")
    mem = ", ".join(f"{k} {v:.1f}" for k, v in out["memory_per_chip_gb"].items())
    console.print(f"memory per chip (GB): {mem}")


@app.command("recsys")
def recsys_cmd(
    model: Annotated[
        str, typer.Argument(help="A recommendation model id (dlrm-v2) or a model YAML/JSON path.")
    ],
    hardware: Annotated[str, typer.Option("--hardware", help="A hardware catalog id.")],
    chips: Annotated[int, typer.Option("--chips", help="Chips in the system.")] = 1,
    batch: Annotated[
        int | None, typer.Option("--batch", help="Samples per batch (inference) or per step (training).")
    ] = None,
    pairs_per_sample: Annotated[
        float, typer.Option("--pairs-per-sample", help="User-item pairs per sample.")
    ] = 1.0,
    latency_limit: Annotated[
        float | None, typer.Option("--latency-limit", help="p99 limit, s: server mode.")
    ] = None,
    sharding: Annotated[str, typer.Option("--sharding", help="auto, data, table, row or column.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="Dense math.")] = "int8",
    embedding_precision: Annotated[str | None, typer.Option("--embedding-precision")] = None,
    training: Annotated[bool, typer.Option("--train", help="A training step instead of inference.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Predict a recommendation model: throughput at a batch, the highest QPS under a p99 limit, or training."""
    from tapeout.sim.recsys_api import recsys as run_recsys

    out = run_recsys(
        model, hardware, chips, batch=batch, pairs_per_sample=pairs_per_sample, latency_limit_s=latency_limit,
        sharding=sharding, precision=precision, embedding_precision=embedding_precision, training=training,
    )  # fmt: skip
    if as_json:
        _print_json(out)
        return
    console.print(f"{out['model']} on {chips} x {out['hardware']}, {out['sharding']} sharding, {out['mode']}")
    for key, value in out.items():
        if key in ("model", "hardware", "sharding", "mode", "chips"):
            continue
        console.print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")


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
    from tapeout.cost.api import cost

    out = cost(chip, volume=volume, region=region, levy=levy)
    if as_json:
        _print_json(out)
        return
    published = out["published_die_area_mm2"]
    console.print(
        f"{out['name']} ({out['id']}), {out['process_node']}: die {out['die_area_mm2']:,.0f} mm^2 modelled"
        + (f", {published:,.0f} published" if published else ", no published area")
    )
    console.print(_table("area per die, mm^2", [out["area_mm2"]]))
    console.print(
        f"dies per wafer {out['dies_per_wafer']:.1f}, yield {100 * out['yield']:.1f} %, "
        f"{out['dies_per_package']} die(s) per package"
    )
    console.print(_table("unit cost, US$", [{**out["cost_usd"], "total": out["unit_cost_usd"]}]))
    if out["volume"]:
        console.print(f"NRE ${out['nre_usd'] / 1e6:,.1f}M over {out['volume']:,} units")
    console.print(_table("power at full load, W", [out["power_w"]]))
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
    from tapeout.plan import load_demand, plan

    out = plan(load_demand(demand), workers=workers).data
    if as_json:
        _print_json(out)
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


def main() -> None:
    try:
        app()
    except TapeoutError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
