"""Each chip's roofline with the serving workloads' ops on it: one layer of a prefill and of a decode
iteration at the plan's replica, each op costed by the cost rules (`perf.rules.op_cost`) on the
replica's system, and what bounds each phase (`api.phases`: the replica's own step)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from tapeout.api import phases
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.shard import shard
from tapeout.perf.rules import op_cost
from tapeout.plan.demand import ServingDemand
from tapeout.plan.fleet import FleetPlan
from tapeout.sim.llm import Replica
from tapeout.study.answer import plan_source
from tapeout.study.result import Chart, Section, Series, Table
from tapeout.study.workloads import plan_text, serving_model
from tapeout.workloads import transformer
from tapeout.workloads.graph import Graph, Phase

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


def _points(rep: Replica, graph: Graph, name: str, source: str) -> Series:
    xs, ys, notes = [], [], []
    for node in graph.nodes:
        c = op_cost(node.op, rep.system)
        if c.flops <= 0 or c.dram_bytes <= 0 or c.time_s <= 0:
            continue
        xs.append(c.flops / c.dram_bytes)
        ys.append(c.flops / c.time_s / 1e12)
        notes.append(f"{node.name}: {c.flops / 1e9:,.3g} GFLOP, {c.dram_bytes / 1e6:,.3g} MB, "
                     f"{c.time_s * 1e6:,.3g} us, {c.bound}-bound")  # fmt: skip
    return Series(name=name, x=tuple(xs), y=tuple(ys), sources=tuple(source for _ in xs), notes=tuple(notes))


def _roof(rep: Replica, lo: float, hi: float) -> Series:
    chip = rep.system.chip
    peak = chip.peak_flops(rep.numerics.compute)
    xs = np.geomspace(lo, hi, 40)
    ys = np.minimum(peak, chip.memory_bandwidth * xs) / 1e12
    return Series(name=f"roof ({rep.numerics.compute})", x=tuple(float(x) for x in xs),
                  y=tuple(float(y) for y in ys), sources=tuple(f"{ROOF}: {chip.id}" for _ in xs),
                  mode="lines")  # fmt: skip


def roofline(fleet: FleetPlan) -> Section:
    """One chart per candidate chip; a table of what bounds each phase."""
    serving = [(i, dp) for i, dp in enumerate(fleet.demands) if isinstance(dp.demand, ServingDemand)]
    charts, rows, sources = [], [], []
    for p in fleet.candidates:
        series: list[Series] = []
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
            series.append(_points(rep, _layer(rep, prompt, 1, prompt, prompt, Phase.PREFILL),
                                  f"{d.name} prefill ({prompt} tokens)", src))  # fmt: skip
            series.append(_points(rep, _layer(rep, n, n, 1, context, Phase.DECODE),
                                  f"{d.name} decode (batch {n})", src))  # fmt: skip
            pre, dec = phases(rep, d.input_len, n, model.context)
            for ph, what in (
                (pre, f"prefill of {pre.size} tokens"),
                (dec, f"decode of {dec.size} sequences"),
            ):
                rows.append((p.key, d.name, what, ph.time_s * 1e3, ph.bound))
                sources.append(f"api.phases of the plan's replica ({plan_text(a.cap)} x {p.chip.id}) at the "
                               f"capacity's mean decode batch ({plan_source(i)})")  # fmt: skip
        if rep is None or not any(s.x for s in series):
            continue
        xs = [x for s in series for x in s.x if isinstance(x, float)]
        charts.append(_chart(p.key, rep, series, min(xs) / 3, max(xs) * 3))
    table = Table(title="What bounds each phase (one iteration of the plan's replica)",
                  columns=("chip", "demand", "phase", "time, ms", "bound"), rows=tuple(rows),
                  sources=tuple(sources))  # fmt: skip
    return Section(key="roofline", title="Rooflines", charts=tuple(charts), tables=(table,),
                   intro="Each chip's roof (its datasheet peak in the workload's format, and memory bandwidth "
                   "times arithmetic intensity) with every op of one layer placed at the rate the cost rules "
                   "give it.")  # fmt: skip


def _chart(key: str, rep: Replica, series: list[Series], lo: float, hi: float) -> Chart:
    chip = rep.system.chip
    ridge = chip.peak_flops(rep.numerics.compute) / chip.memory_bandwidth

    def side(phase: str) -> tuple[int, int]:
        xs = [x for s in series if phase in s.name for x in s.x if isinstance(x, float)]
        return sum(1 for x in xs if x >= ridge), len(xs)

    (pre_right, pre), (dec_right, dec) = side("prefill"), side("decode")
    return Chart(
        title=f"{key}: roofline", kind="scatter", x_title="arithmetic intensity, FLOP per DRAM byte",
        y_title="TFLOP/s", series=(_roof(rep, min(lo, ridge / 3), max(hi, ridge * 3)), *series),
        log_x=True, log_y=True,
        reading=f"The ridge of {chip.id} is at {ridge:,.0f} FLOP/byte: {pre_right} of {pre} prefill ops sit right "
        f"of it (where compute bounds), {dec - dec_right} of {dec} decode ops left of it (where memory bandwidth "
        "bounds).",
    )  # fmt: skip
