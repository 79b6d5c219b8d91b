"""Each chip's roofline with the study's ops on it, each costed by the cost rules
(`perf.rules.op_cost`) on the system the plan runs it on: one layer of a prefill and of a decode
iteration at the plan's serving replica, the ranking model's forward at the batch one chip forms
within half its latency limit, and one training micro-batch through a layer, forward and backward,
at the plan's training layout; and what bounds each serving phase (`api.phases`: the replica's own
step). A roof is drawn for every number format the ops run in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from tapeout.api import phases, system_for
from tapeout.hardware.spec import ChipSpec
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.recsys import RecsysPlan
from tapeout.parallel.shard import shard
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.rules import op_cost
from tapeout.perf.system import System
from tapeout.plan.capacity import Capacity
from tapeout.plan.demand import Demand, RecsysDemand, ServingDemand, TrainingDemand
from tapeout.plan.fleet import FleetPlan
from tapeout.sim.llm import Replica
from tapeout.sim.train import layer_graphs
from tapeout.study.answer import plan_source
from tapeout.study.result import Chart, Section, Series, Table
from tapeout.study.workloads import plan_text, serving_model
from tapeout.workloads import dlrm, transformer
from tapeout.workloads.graph import Graph, Phase
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model
from tapeout.workloads.recsys import RecsysConfig

ROOF = "datasheet peak and memory bandwidth (tapeout hardware show ID --json)"
OPS = "perf.rules.op_cost of one layer's ops (workloads.transformer, sharded by parallel.shard)"


def _layer(rep: Replica, tokens: int, batch: int, q: int, kv: int, phase: Phase) -> Graph:
    """One layer (the model's most common kind) and its attention, as one chip of the replica runs it."""
    m, num = rep.model, rep.numerics
    moe = max(transformer.census(m), key=lambda kc: kc[1])[0]
    mla: Literal["expanded", "absorbed"] = "absorbed" if phase == Phase.DECODE else "expanded"
    layer = transformer.layer(m, tokens, num, moe=moe, router=rep.router)
    core = transformer.attention(m, batch=batch, q_len=q, kv_len=kv, numerics=num, phase=phase, mla=mla)
    return shard(layer + core, rep.plan).compute()


Placed = tuple[Series, str]  # the ops of one phase, and the format their products run in


def _points(system: System, graph: Graph, name: str, source: str) -> Placed:
    xs, ys, notes = [], [], []
    for node in graph.nodes:
        c = op_cost(node.op, system)
        if c.flops <= 0 or c.dram_bytes <= 0 or c.time_s <= 0:
            continue
        xs.append(c.flops / c.dram_bytes)
        ys.append(c.flops / c.time_s / 1e12)
        notes.append(f"{node.name}: {c.flops / 1e9:,.3g} GFLOP, {c.dram_bytes / 1e6:,.3g} MB, "
                     f"{c.time_s * 1e6:,.3g} us, {c.bound}-bound")  # fmt: skip
    fmt = next((str(getattr(n.op, "precision", "")) for n in graph.nodes if n.op.kind.value == "matmul"), "")
    return Series(
        name=name, x=tuple(xs), y=tuple(ys), sources=tuple(source for _ in xs), notes=tuple(notes)
    ), fmt


def _roof(chip: ChipSpec, fmt: str, lo: float, hi: float) -> Series:
    peak = chip.peak_flops(fmt)
    xs = np.geomspace(lo, hi, 40)
    ys = np.minimum(peak, chip.memory_bandwidth * xs) / 1e12
    return Series(name=f"roof ({fmt})", x=tuple(float(x) for x in xs), y=tuple(float(y) for y in ys),
                  sources=tuple(f"{ROOF}: {chip.id}" for _ in xs), mode="lines")  # fmt: skip


def _planned(fleet: FleetPlan, key: str, kind: type[Demand]) -> Iterator[tuple[int, Any, Capacity]]:
    """(demand index, demand, capacity) of each demand of `kind` the candidate `key` can meet."""
    for i, dp in enumerate(fleet.demands):
        a = next((a for a in dp.alternatives if a.candidate == key), None)
        if isinstance(dp.demand, kind) and a is not None and a.cap is not None:
            yield i, dp.demand, a.cap


def _ranking(fleet: FleetPlan, key: str, chip: ChipSpec) -> list[Placed]:
    out = []
    for i, d, cap in _planned(fleet, key, RecsysDemand):
        config = resolve_model(d.model, d.name, None)
        assert isinstance(config, RecsysConfig) and isinstance(cap.plan, RecsysPlan)
        samples = max(1, round(cap.per_chip * d.latency_limit_s / 2))
        dense = cap.plan.precision or d.precision
        graph = dlrm.forward(config, max(1, round(samples * d.pairs_per_sample)), dense_precision=dense,
                             embedding_precision=cap.plan.embedding_precision or dense).compute()  # fmt: skip
        system = system_for(chip, 1, None, "recsys")[0]
        src = f"perf.rules.op_cost of workloads.dlrm.forward on {chip.id} ({plan_source(i)})"
        out.append(_points(system, graph, f"{d.name} forward ({samples:,} samples)", src))
    return out


def _training(fleet: FleetPlan, key: str, chip: ChipSpec) -> list[Placed]:
    out = []
    for i, d, cap in _planned(fleet, key, TrainingDemand):
        config = resolve_model(d.model, d.name, None)
        assert isinstance(config, LLMConfig) and isinstance(cap.plan, TrainingPlan)
        plan = cap.training.plan if cap.training is not None else cap.plan
        forward, backward = layer_graphs(config, plan, d.seq_len)
        system = replace(system_for(chip, cap.chips, None, "training")[0], load="training")
        src = f"perf.rules.op_cost of sim.train.layer_graphs on {chip.id} ({plan_source(i)})"
        out.append(
            _points(system, Graph.join([forward, backward]), f"{d.name} layer, forward and backward", src)
        )
    return out


def roofline(fleet: FleetPlan) -> Section:
    """One chart per candidate chip; a table of what bounds each phase."""
    serving = [(i, dp) for i, dp in enumerate(fleet.demands) if isinstance(dp.demand, ServingDemand)]
    charts, rows, sources = [], [], []
    for p in fleet.candidates:
        series: list[Placed] = []
        rep = None
        for i, dp in serving:
            d = dp.demand
            assert isinstance(d, ServingDemand)
            a = next(a for a in dp.alternatives if a.candidate == p.key)
            if a.cap is None or not isinstance(a.cap.plan, InferencePlan) or a.cap.requests_per_s is None:
                continue
            model, _ = serving_model(d, p.chip.id, a.cap.plan)
            rep = model.replica
            load = model.load(a.cap.requests_per_s)
            n = max(1, round(load.decode_batch)) if load is not None else 1
            prompt, context = round(d.input_len), round(model.context)
            src = f"{OPS} on {p.chip.id}, {plan_text(a.cap)}"
            series.append(_points(rep.system, _layer(rep, prompt, 1, prompt, prompt, Phase.PREFILL),
                                  f"{d.name} prefill ({prompt} tokens)", src))  # fmt: skip
            series.append(_points(rep.system, _layer(rep, n, n, 1, context, Phase.DECODE),
                                  f"{d.name} decode (batch {n})", src))  # fmt: skip
            pre, dec = phases(rep, d.input_len, n, model.context)
            for ph, what in (
                (pre, f"prefill of {pre.size} tokens"),
                (dec, f"decode of {dec.size} sequences"),
            ):
                rows.append((p.key, d.name, what, ph.time_s * 1e3, ph.bound))
                sources.append(f"api.phases of the plan's replica ({plan_text(a.cap)} x {p.chip.id}) at the "
                               f"capacity's mean decode batch ({plan_source(i)})")  # fmt: skip
        series += _ranking(fleet, p.key, p.chip) + _training(fleet, p.key, p.chip)
        series = [(s, f) for s, f in series if s.x]
        if not series:
            continue
        xs = [x for s, _ in series for x in s.x if isinstance(x, float)]
        charts.append(_chart(p.key, p.chip, series, min(xs) / 3, max(xs) * 3))
    table = Table(title="What bounds each phase (one iteration of the plan's replica)",
                  columns=("chip", "demand", "phase", "time, ms", "bound"), rows=tuple(rows),
                  sources=tuple(sources))  # fmt: skip
    return Section(key="roofline", title="Rooflines", charts=tuple(charts), tables=(table,),
                   intro="Each chip's roofs (its datasheet peak in each format the ops run in, and memory "
                   "bandwidth times arithmetic intensity) with the ops of one serving layer, the ranking "
                   "model and one training layer (forward and backward) placed at the rates the cost rules "
                   "give them.")  # fmt: skip


def _chart(key: str, chip: ChipSpec, series: list[Placed], lo: float, hi: float) -> Chart:
    formats = sorted({f for _, f in series if f and chip.peak_flops(f) > 0})
    ridges = {f: chip.peak_flops(f) / chip.memory_bandwidth for f in formats}
    roofs = [_roof(chip, f, min(lo, ridges[f] / 3), max(hi, ridges[f] * 3)) for f in formats]
    counts = []
    for s, f in series:
        ridge = ridges.get(f)
        if ridge is None:
            continue
        xs = [x for x in s.x if isinstance(x, float)]
        counts.append(f"{s.name}: {sum(1 for x in xs if x >= ridge)} of {len(xs)} right of the {f} ridge")
    ridge_text = ", ".join(f"{f} {r:,.0f}" for f, r in ridges.items())
    return Chart(
        title=f"{key}: roofline", kind="scatter", x_title="arithmetic intensity, FLOP per DRAM byte",
        y_title="TFLOP/s", series=(*roofs, *(s for s, _ in series)), log_x=True, log_y=True,
        reading=f"The ridges of {chip.id} (FLOP/byte: {ridge_text}) split compute-bound ops (right) from "
        f"memory-bound ones (left): " + "; ".join(counts) + ".",
    )  # fmt: skip
