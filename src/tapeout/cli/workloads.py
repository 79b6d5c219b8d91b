"""Serving, training and recommendation models: `tapeout serve | train | recsys`. Each command's
plan flags come from its plan's fields (`cli.options`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from tapeout.cli.app import JsonFlag, app, console, print_json
from tapeout.cli.options import plan_options
from tapeout.parallel.fields import plan_fields
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.training import TrainingPlan

Model = Annotated[str, typer.Argument(help="A model catalog id or a config.json path.")]
Hardware = Annotated[str, typer.Option("--hardware", help="A hardware catalog id.")]
SEARCHED = frozenset(f.name for f in plan_fields(TrainingPlan, searched=True))


@app.command()
@plan_options(InferencePlan)
def serve(
    model: Model,
    hardware: Hardware,
    chips: Annotated[int, typer.Option("--chips", help="Chips in the system.")] = 1,
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
    plan_given: dict[str, Any] | None = None,
) -> None:
    """Simulate serving a model: throughput, latency percentiles, memory per chip, limiters."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.api import serve as run_serve

    plan = InferencePlan(**(plan_given or {}))
    show = not as_json and sys.stderr.isatty() and requests >= 2000
    bar = Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed} iterations"),
                   console=Console(stderr=True), transient=True, disable=not show)  # fmt: skip
    with bar:
        task = bar.add_task("serve", total=None)
        out = run_serve(
            model, hardware, chips, plan, input_len=input_len, output_len=output_len, rate=rate, trace=trace,
            requests=requests, max_batch=max_batch, max_tokens=max_tokens, policy=policy, ttft_limit_s=ttft_limit,
            tpot_limit_s=tpot_limit, progress=(lambda n: bar.update(task, completed=n)) if show else None,
        )  # fmt: skip
    if as_json:
        print_json(out.as_dict())
        return
    _print_serve(out, ttft_limit is not None or tpot_limit is not None)


def _print_serve(out: Any, limits: bool) -> None:
    d = out.as_dict()
    p = d["plan"]
    console.print(
        f"{out.model} on {out.chips} x {out.hardware}: {out.replicas} replica(s) of tp {p['tp']} x pp {p['pp']}"
        f" x ep {p['ep']}, {p['precision']} weights, {p['kv_precision']} KV, policy {out.policy}, "
        f"{out.arrivals} arrivals"
    )
    console.print(
        f"throughput {d['tokens_per_s']:,.0f} output tokens/s, {d['requests_per_s']:.3g} requests/s"
        f" ({d['requests']} requests in {d['duration_s']:.3g} s simulated, {d['preemptions']} preemptions)"
    )
    if limits:
        console.print(f"goodput {d['goodput_tokens_per_s']:,.0f} output tokens/s within the limits")
    lat = Table(title="latency (s)")
    for col in ("", "mean", "p50", "p90", "p99"):
        lat.add_column(col, justify="right")
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")):
        lat.add_row(name, *(f"{d[key][q]:.4g}" for q in ("mean", "p50", "p90", "p99")))
    console.print(lat)
    mem = d["memory_per_chip"]
    console.print(
        f"memory per chip: weights {mem['weights_gb']:.1f} GB, activations {mem['activations_gb']:.1f} GB, "
        f"runtime {mem['reserve_gb']:.1f} GB, KV cache {mem['kv_cache_gb']:.1f} GB ({mem['kv_tokens']:,} tokens) "
        f"of {mem['capacity_gb']:g} GB"
    )
    for phase, unit in ((out.prefill, "tokens"), (out.decode, "sequences")):
        name = "prefill" if phase is out.prefill else "decode"
        console.print(
            f"{name}: one iteration of {phase.size} {unit} takes {1e3 * phase.time_s:.3g} ms, {phase.bound}-bound"
        )


@app.command()
@plan_options(TrainingPlan)
def train(
    model: Model,
    hardware: Hardware,
    chips: Annotated[int, typer.Option("--chips", help="Chips in the system.")],
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="Sequences per step.")],
    do_search: Annotated[
        bool,
        typer.Option("--search", help="Find the fastest plan that fits; plan flags given pin the search."),
    ] = False,
    budget: Annotated[int, typer.Option("--budget", help="Plans the search may try.")] = 200_000,
    chips_per_node: Annotated[int | None, typer.Option("--chips-per-node")] = None,
    as_json: JsonFlag = False,
    plan_given: dict[str, Any] | None = None,
) -> None:
    """Predict a training step: time, tokens/s, MFU, breakdown and memory per chip."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.api import train as run_train

    given = dict(plan_given or {})
    pins = {k: v for k, v in given.items() if k in SEARCHED} if do_search else {}
    plan = TrainingPlan(**{k: v for k, v in given.items() if k not in pins})
    out = run_train(model, hardware, chips, seq_len=seq_len, global_batch=global_batch, plan=plan,
                    search=do_search, pins=pins, budget=budget, chips_per_node=chips_per_node)  # fmt: skip
    if as_json:
        print_json(out.as_dict())
        return
    d = out.as_dict()
    p = d["plan"]
    console.print(
        f"{out.model} on {chips} x {out.hardware}: tp {p['tp']} pp {p['pp']} dp {p['dp']} cp {p['cp']} "
        f"ep {p['ep']} vpp {p['vpp']}, micro-batch {p['micro_batch']} ({p['micro_batches']} per step), "
        f"sequence parallel {p['sequence_parallel']}, tp overlap {p['tp_overlap']}, ep overlap {p['ep_overlap']}, "
        f"{p['attention']} attention, recompute {p['recompute']}, ZeRO {p['zero']}"
        + (f" sharded over {p['zero_shard']} ranks" if p["zero_shard"] else "")
    )
    if out.search is not None:
        s = out.search
        console.print(
            f"search: {s.tried} plans tried, {s.feasible} fit" + ("" if s.exhausted else " (budget hit)")
        )
    r = out.result
    console.print(
        f"step {r.step_time_s:.4g} s, {r.tokens_per_s:,.0f} tokens/s, MFU {100 * r.mfu:.1f}%, HFU {100 * r.hfu:.1f}%"
    )
    console.print("time: " + ", ".join(f"{k.replace('_', ' ')} {v:.3g} s" for k, v in r.breakdown_s.items()))
    console.print("memory per chip (GB): " + ", ".join(f"{k} {v:.1f}" for k, v in r.memory_gb.items()))


@app.command("recsys")
@plan_options(RecsysPlan)
def recsys_cmd(
    model: Annotated[
        str, typer.Argument(help="A recommendation model id (dlrm-v2) or a model YAML/JSON path.")
    ],
    hardware: Hardware,
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
    training: Annotated[bool, typer.Option("--train", help="A training step instead of inference.")] = False,
    as_json: JsonFlag = False,
    plan_given: dict[str, Any] | None = None,
) -> None:
    """Predict a recommendation model: throughput at a batch, the highest QPS under a p99 limit, or training."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.api import recsys as run_recsys

    out = run_recsys(model, hardware, chips, RecsysPlan(**(plan_given or {})), batch=batch,
                     pairs_per_sample=pairs_per_sample, latency_limit_s=latency_limit, training=training)  # fmt: skip
    if as_json:
        print_json(out.as_dict())
        return
    console.print(f"{out.model} on {chips} x {out.hardware}, {out.sharding} sharding, {out.mode}")
    for key, value in out.result.as_dict().items():
        if key == "sharding":
            continue
        console.print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
