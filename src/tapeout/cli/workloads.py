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

from tapeout.cli.app import (
    Chips,
    Hardware,
    JsonFlag,
    MaxSeconds,
    Software,
    app,
    busy,
    console,
    num,
    print_json,
    text,
)
from tapeout.cli.options import plan_options
from tapeout.parallel.fields import plan_fields
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.training import TrainingPlan

Model = Annotated[str, typer.Argument(help="A model catalog id or a config.json path.")]
LongContext = Annotated[
    bool,
    typer.Option(
        "--allow-long-context",
        help="Accept sequences longer than the model's context (max_position_embeddings).",
    ),
]
SEARCHED = frozenset(f.name for f in plan_fields(TrainingPlan, searched=True))


@app.command()
@plan_options(InferencePlan)
def serve(
    model: Model,
    hardware: Hardware,
    chips: Chips,
    input_len: Annotated[float, typer.Option("--input-len", help="Prompt tokens per request.")] = 512,
    output_len: Annotated[float, typer.Option("--output-len", help="Output tokens per request.")] = 256,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", help="Poisson requests/s, whole system; without it (or --trace) all arrive at once."
        ),
    ] = None,
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
    allow_long_context: LongContext = False,
    max_seconds: MaxSeconds = 600.0,
    software: Software = None,
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
            tpot_limit_s=tpot_limit, allow_long_context=allow_long_context, max_seconds=max_seconds,
            software=software, progress=(lambda n: bar.update(task, completed=n)) if show else None,
        )  # fmt: skip
    if as_json:
        print_json(out.as_dict())
        return
    _print_serve(out, ttft_limit is not None or tpot_limit is not None)


_ARRIVALS = {
    "offline": "all requests queued at once (offline; give --rate or --trace for a stream)",
    "poisson": "a Poisson stream",
    "trace": "the trace's arrivals",
}


def _print_serve(out: Any, limits: bool) -> None:
    d = out.as_dict()
    p = d["plan"]
    r = out.result
    act = p["act_precision"] or p["precision"]
    console.print(
        f"{text(out.model)} on {out.chips} x {out.hardware}: {out.replicas} replica(s) of tp {p['tp']} x pp "
        f"{p['pp']} x ep {p['ep']}; formats: weights {p['precision']}, activations {act}, KV cache "
        f"{p['kv_precision']}; policy {out.policy}; {_ARRIVALS[out.arrivals]}"
    )
    console.print(f"software: {text(str(out.software))}")
    console.print(
        f"throughput (all {out.replicas} replica(s)): {num(d['tokens_per_s'])} output tokens/s, "
        f"{num(d['requests_per_s'])} requests/s"
    )
    console.print(
        f"one replica simulated: {num(r.requests)} requests in {num(r.duration_s, 's')}, {num(r.iterations)} "
        f"iterations, {num(r.preemptions)} preemptions"
    )
    if limits:
        console.print(f"goodput {num(d['goodput_tokens_per_s'])} output tokens/s within the limits")
    lat = Table(title="latency (ms)")
    for col in ("", "mean", "p50", "p90", "p99"):
        lat.add_column(col, justify="right")
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")):
        lat.add_row(name, *(num(1e3 * d[key][q]) for q in ("mean", "p50", "p90", "p99")))
    console.print(lat)
    mem = d["memory_per_chip"]
    console.print(
        f"memory per chip: weights {num(mem['weights_gb'], 'GB')}, activations {num(mem['activations_gb'], 'GB')}, "
        f"runtime {num(mem['reserve_gb'], 'GB')}, KV cache {num(mem['kv_cache_gb'], 'GB')} "
        f"({num(mem['kv_tokens'])} tokens) of {num(mem['capacity_gb'], 'GB')}"
    )
    for phase, unit in ((out.prefill, "tokens"), (out.decode, "sequences")):
        name = "prefill" if phase is out.prefill else "decode"
        console.print(
            f"{name}: one iteration of {num(phase.size)} {unit} takes {num(1e3 * phase.time_s, 'ms')}, "
            f"{phase.bound}-bound"
        )


@app.command()
@plan_options(TrainingPlan)
def train(
    model: Model,
    hardware: Hardware,
    chips: Chips,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="Sequences per step.")],
    do_search: Annotated[
        bool,
        typer.Option("--search", help="Find the fastest plan that fits; plan flags given pin the search."),
    ] = False,
    budget: Annotated[int, typer.Option("--budget", help="Plans the search may try.")] = 200_000,
    chips_per_node: Annotated[
        int | None,
        typer.Option("--chips-per-node", help="Chips per scale-up domain [default: the chip's node]."),
    ] = None,
    allow_long_context: LongContext = False,
    max_seconds: MaxSeconds = 600.0,
    software: Software = None,
    as_json: JsonFlag = False,
    plan_given: dict[str, Any] | None = None,
) -> None:
    """Predict a training step: time, tokens/s, MFU, breakdown and memory per chip."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.api import train as run_train

    given = dict(plan_given or {})
    pins = {k: v for k, v in given.items() if k in SEARCHED} if do_search else {}
    plan = TrainingPlan(**{k: v for k, v in given.items() if k not in pins})
    with busy("searching plans" if do_search else "predicting the step", as_json):
        out = run_train(model, hardware, chips, seq_len=seq_len, global_batch=global_batch, plan=plan,
                        search=do_search, pins=pins, budget=budget, chips_per_node=chips_per_node,
                        allow_long_context=allow_long_context, max_seconds=max_seconds,
                        software=software)  # fmt: skip
    if as_json:
        print_json(out.as_dict())
        return
    d = out.as_dict()
    p = d["plan"]
    console.print(
        f"{text(out.model)} on {num(chips)} x {out.hardware}, {p['precision']} matmuls: tp {p['tp']} pp {p['pp']} "
        f"dp {p['dp']} cp {p['cp']} ep {p['ep']} vpp {p['vpp']}, micro-batch {p['micro_batch']} "
        f"({p['micro_batches']} per step), sequence parallel {_yes(p['sequence_parallel'])}, tp overlap "
        f"{_yes(p['tp_overlap'])}, ep overlap {_yes(p['ep_overlap'])}, {p['attention']} attention, recompute "
        f"{p['recompute']}, ZeRO {p['zero']}"
        + (f" sharded over {p['zero_shard']} ranks" if p["zero_shard"] else "")
    )
    console.print(f"software: {text(str(out.software))}")
    if p["capacity_factor"] is not None:
        console.print(
            f"experts capped at {num(p['capacity_factor'])} x their mean rows: "
            f"{num(100 * d['moe_dropped_share'])} % of the routed copies dropped"
        )
    if out.search is not None:
        s = out.search
        console.print(
            f"search: {num(s.tried)} plans tried, {num(s.feasible)} fit"
            + ("" if s.exhausted else " (budget hit)")
        )
    r = out.result
    console.print(
        f"step {num(r.step_time_s, 's')}, {num(r.tokens_per_s)} tokens/s, MFU {num(100 * r.mfu)} %, "
        f"HFU {num(100 * r.hfu)} %"
    )
    console.print(
        "time: " + ", ".join(f"{k.replace('_', ' ')} {num(v, 's')}" for k, v in r.breakdown_s.items())
    )
    console.print("memory per chip: " + ", ".join(f"{k} {num(v, 'GB')}" for k, v in r.memory_gb.items()))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# How a recommendation result's fields print: a label and a unit.
_RECSYS_FIELDS = {
    "samples_per_s": ("throughput", "samples/s"), "pairs_per_s": ("pairs ranked", "pairs/s"),
    "batch_pairs_per_chip": ("batch per chip", "pairs"), "batch_time_s": ("batch time", "s"),
    "p99_latency_s": ("p99 latency", "s"), "step_time_s": ("step time", "s"), "bound": ("bound", ""),
}  # fmt: skip


@app.command("recsys")
@plan_options(RecsysPlan)
def recsys_cmd(
    model: Annotated[
        str, typer.Argument(help="A recommendation model id (dlrm-v2) or a model YAML/JSON path.")
    ],
    hardware: Hardware,
    chips: Chips,
    batch: Annotated[
        int | None, typer.Option("--batch", help="Samples per batch (inference) or per step (training).")
    ] = None,
    pairs_per_sample: Annotated[
        float,
        typer.Option(
            "--pairs-per-sample", help="User-item pairs each sample ranks (MLPerf's DLRM samples: about 270)."
        ),
    ] = 1.0,
    latency_limit: Annotated[
        float | None, typer.Option("--latency-limit", help="p99 limit, s: server mode.")
    ] = None,
    training: Annotated[bool, typer.Option("--train", help="A training step instead of inference.")] = False,
    software: Software = None,
    as_json: JsonFlag = False,
    plan_given: dict[str, Any] | None = None,
) -> None:
    """Predict a recommendation model: throughput at a batch, the highest QPS under a p99 limit, or training."""
    # imported here, not at the top: start-up time (see the package docstring)
    from tapeout.api import recsys as run_recsys

    plan = RecsysPlan(**(plan_given or {}))
    with busy("searching the rate" if latency_limit is not None else "predicting", as_json):
        out = run_recsys(model, hardware, chips, plan, batch=batch, pairs_per_sample=pairs_per_sample,
                         latency_limit_s=latency_limit, training=training, software=software)  # fmt: skip
    if as_json:
        print_json(out.as_dict())
        return
    console.print(
        f"{text(out.model)} on {num(chips)} x {out.hardware}, {out.mode}: {out.precision} dense part, "
        f"{out.embedding_precision} tables, {out.sharding} sharding, {num(pairs_per_sample)} user-item "
        f"pair(s) per sample"
    )
    console.print(f"software: {text(str(out.software))}")
    for key, value in out.result.as_dict().items():
        if key == "sharding" or value is None:
            continue
        if key == "breakdown_s":
            console.print(
                "  time: " + ", ".join(f"{k.replace('_', ' ')} {num(v, 's')}" for k, v in value.items())
            )
            continue
        label, unit = _RECSYS_FIELDS.get(key, (key.replace("_", " "), ""))
        shown = num(value, unit) if isinstance(value, int | float) else text(value)
        console.print(f"  {label}: {shown}")
