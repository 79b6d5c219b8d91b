"""Software: which of the study's models compile for our chips and how long one layer takes there
(`tapeout.compile`), the numerics error of each format (`CompiledModel.numerics`), and how the
answer moves with first-year (`launch`) against `mature` software, with the maturity curve
(`perf.maturity`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import tapeout.api as api
from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import get_chip
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.maturity import maturity
from tapeout.plan.capacity import Capacity
from tapeout.plan.demand import Demand, RecsysDemand, ServingDemand, TrainingDemand
from tapeout.plan.fleet import FleetPlan
from tapeout.sim.capacity import ServingModel
from tapeout.sim.scenarios import auto_batch
from tapeout.study.answer import Option, plan_source
from tapeout.study.result import Chart, Section, Series, Table
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import resolve_model

INSTALL_TORCH = "the compiler needs PyTorch and transformers: pip install 'tapeout[torch]'"
COMPILE_SEQ = 128  # tokens of the example input a layer is compiled for
RECSYS_BATCH = 4096  # samples a recommendation model is compiled for
FORMATS = ("bf16", "fp8", "int8")
# The numerics model: the study model's architecture at a size a CPU runs in a second (random
# weights): what a format does to a transformer of this shape, not to the trained model.
SMALL = {"hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 8, "head_dim": 32,
         "vocab_size": 1000, "max_position_embeddings": 128}  # fmt: skip
# Multi-head latent attention and experts at that size (DeepSeek-V3's shape, scaled down; the
# rotary head_dim is qk_rope_head_dim, as transformers' DeepseekV3Config sets it).
SMALL_MLA = {"q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16,
             "v_head_dim": 32, "n_routed_experts": 8, "moe_intermediate_size": 128, "num_experts_per_tok": 2,
             "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "head_dim": 16}  # fmt: skip
SMALL_LAYERS, SMALL_BATCH, SMALL_SEQ = 2, 2, 32
MATURITY = "tapeout maturity --json"


def _compile_one(
    compile_model: Any, catalog_model: Any, d: Demand, chip: str, precision: str
) -> tuple[Any, ...]:
    """One layer of a language model (an expert layer where the model has experts), or a whole
    recommendation model at RECSYS_BATCH samples, compiled for `chip`."""
    config = resolve_model(d.model, d.name, None)
    if isinstance(config, LLMConfig):
        net, args = catalog_model(d.model, layers=1, seq=COMPILE_SEQ, first_layer_dense=False)
        what = "compiles (one expert layer)" if config.is_moe else "compiles"
    else:
        net, args = catalog_model(d.model, batch=RECSYS_BATCH)
        what = f"compiles (the whole model, {RECSYS_BATCH:,} samples)"
    e = compile_model(net, args, target=chip, precision=precision).estimate()
    return (e.time_s * 1e3, e.kernels, e.fallbacks, what)


def compile_table(demands: tuple[Demand, ...], ours: dict[str, str]) -> Table:
    """One row per (model, our chip): one layer's estimated time, kernels and fallbacks, or why not."""
    try:
        from tapeout.compiler import compile as compile_model
        from tapeout.compiler.catalog import catalog_model
    except ImportError as exc:
        raise TapeoutError(f"{INSTALL_TORCH} ({exc})") from None
    rows, sources, seen = [], [], set()
    for d in demands:
        for key, chip in ours.items():
            if (d.model, chip) in seen:
                continue
            seen.add((d.model, chip))
            config = resolve_model(d.model, d.name, None)
            precision = d.precision if d.precision in get_chip(chip).formats else "bf16"
            shape = (f"--layers 1 --seq {COMPILE_SEQ}" if isinstance(config, LLMConfig)
                     else f"--batch {RECSYS_BATCH}")  # fmt: skip
            cmd = f"tapeout compile --model {d.model} {shape} --target {chip} --precision {precision} --json"
            try:
                rows.append(
                    (d.model, key, precision, *_compile_one(compile_model, catalog_model, d, chip, precision))
                )
            except TapeoutError as exc:
                rows.append((d.model, key, precision, None, None, None, f"does not compile: {exc}"))
            sources.append(cmd)
    return Table(title=f"Which models compile for our chips (a language model's layer at 1 x {COMPILE_SEQ} tokens; "
                       f"a recommendation model whole at {RECSYS_BATCH:,} samples)",
                 columns=("model", "chip", "format", "time, ms", "kernels", "fallbacks", "status"),
                 rows=tuple(rows), sources=tuple(sources))  # fmt: skip


def _small(hf: Any, config: LLMConfig) -> Any:
    import torch  # noqa: TID251  (the compiler's extra: torch is there when the compiler imported)
    import transformers

    c = hf.hf_config(config, SMALL_LAYERS)
    ratio = max(1, config.num_attention_heads // max(1, config.kv_heads))
    small = {**SMALL, "num_key_value_heads": max(1, SMALL["num_attention_heads"] // ratio)}
    if config.architecture == "deepseek_v3":
        small.update(SMALL_MLA)
    for k, v in small.items():
        setattr(c, k, v)
    cls = getattr(transformers, hf.CAUSAL_LM[config.architecture])
    torch.manual_seed(0)
    model = hf.Logits(cls(c)).eval()
    return model, (torch.randint(0, SMALL["vocab_size"], (SMALL_BATCH, SMALL_SEQ)),)


def numerics_chart(demands: tuple[Demand, ...], ours: dict[str, str]) -> Chart | None:
    """Relative error of the logits in each format our chips run, per LLM of the study."""
    import tapeout.compiler.hf as hf
    from tapeout.compiler import compile as compile_model

    series = []
    for d in {d.model: d for d in demands if not isinstance(d, RecsysDemand)}.values():
        config = resolve_model(d.model, d.name, None)
        assert isinstance(config, LLMConfig)
        try:
            model, args = _small(hf, config)
        except TapeoutError:
            continue  # an architecture the compiler does not build: the compile table says so
        xs, ys, src = [], [], []
        for fmt in FORMATS:
            chips = [c for c in ours.values() if fmt in get_chip(c).formats]
            if not chips:
                continue
            err = compile_model(model, args, target=chips[0], precision=fmt).numerics().output
            xs.append(fmt)
            ys.append(100 * err)
            src.append(f"tapeout.compile(..., target={chips[0]!r}, precision={fmt!r}).numerics().output on a "
                       f"{SMALL_LAYERS}-layer {d.model}-shaped model (hidden {SMALL['hidden_size']}, random weights)")  # fmt: skip
        series.append(Series(name=d.model, x=tuple(xs), y=tuple(ys), sources=tuple(src)))
    if not series:
        return None
    worst = max(
        ((s.name, x, y) for s in series for x, y in zip(s.x, s.y, strict=True)), key=lambda t: t[2] or 0
    )
    return Chart(title="Numerics: error of the logits against fp32, per format", kind="bar", x_title="format",
                 y_title="relative error, %", series=tuple(series),
                 reading=f"The largest error is {worst[2]:.1f} % ({worst[1]} on {worst[0]}); the model is the "
                 "study model's shape at a small size with random weights, so this ranks formats, it does not "
                 "certify a trained model.")  # fmt: skip


def _launch_ratio(d: Demand, chip: str, cap: Capacity) -> float:
    """Capacity under `launch` software over that under `mature`, by the same method the plan used."""

    def run(software: str) -> float:
        if isinstance(d, ServingDemand):
            assert isinstance(cap.plan, InferencePlan)
            config = resolve_model(d.model, d.name, None)
            assert isinstance(config, LLMConfig)
            rep, _, _ = api.replica(config, chip, cap.plan.chips, cap.plan, software=software)
            m = ServingModel(
                rep, d.input_len, d.output_len, max_batch=auto_batch(rep, d.input_len, d.output_len)
            )
            return m.capacity(ttft_limit_s=d.ttft_limit_s, tpot_limit_s=d.tpot_limit_s)
        if isinstance(d, RecsysDemand):
            out = api.recsys(d.model, chip, cap.chips, d.plan, latency_limit_s=d.latency_limit_s,
                             pairs_per_sample=d.pairs_per_sample, software=software)  # fmt: skip
            return out.result.samples_per_s
        assert isinstance(d, TrainingDemand) and isinstance(cap.plan, TrainingPlan)
        return api.train(d.model, chip, cap.chips, seq_len=d.seq_len, global_batch=d.global_batch,
                         plan=replace(cap.plan, dp=None), software=software).result.tokens_per_s  # fmt: skip

    mature = run("mature")
    return run("launch") / mature if mature > 0 else 0.0


def launch_table(fleet: FleetPlan, ours_option: Option, baseline: Option) -> tuple[Table, Chart]:
    """Our option's fleet under launch software: capacities scaled by the launch/mature ratio."""
    chips = {p.key: p.chip.id for p in fleet.candidates}
    rows, sources = [], []
    launch_total = 0.0
    for i, (dp, part) in enumerate(zip(fleet.demands, ours_option.parts, strict=True)):
        name, key, _, usd = part
        alt = next(a for a in dp.alternatives if a.candidate == key)
        ratio = _launch_ratio(dp.demand, chips[key], alt.cap) if alt.cap is not None and key in chips else 1.0
        at_launch = usd / ratio if ratio > 0 else float("inf")
        launch_total += at_launch
        rows.append((name, key, ratio, usd / 1e6, at_launch / 1e6))
        sources.append(f"the plan's group re-run under --software launch and mature ({plan_source(i)})")
    table = Table(title="Our fleet under first-year (launch) software",
                  columns=("demand", "chip", "launch / mature capacity", "TCO mature, $M", "TCO at launch, $M"),
                  rows=tuple(rows), sources=tuple(sources),
                  note="launch: what a vendor stack reached in its chip's first year (ROCm 6 on MI300X); mature: "
                  "the best measured stack (docs/software.md). A bought chip runs its own measured stack.")  # fmt: skip
    opts = [("baseline: " + baseline.name, baseline.tco_usd), ("ours, mature software", ours_option.tco_usd),
            ("ours, launch software", launch_total)]  # fmt: skip
    s = Series(name="TCO", x=tuple(o[0] for o in opts), y=tuple(o[1] / 1e6 for o in opts),
               sources=(plan_source(0, " (baseline option)"), plan_source(0, " (our option)"),
                        "the table above: our option's TCO over the launch / mature capacity ratio"))  # fmt: skip
    verb = "still saves" if launch_total < baseline.tco_usd else "no longer saves"
    chart = Chart(title="Launch against mature software", kind="bar", x_title="fleet", y_title="TCO, $M",
                  series=(s,), reading=f"With first-year software our fleet costs ${launch_total / 1e6:,.0f}M and "
                  f"{verb} against {baseline.name} (${baseline.tco_usd / 1e6:,.0f}M).")  # fmt: skip
    return table, chart


def maturity_chart() -> Chart:
    """The fitted share of mature efficiency over months since a stack first ran on a chip."""
    m = maturity()
    months = tuple(float(t) for t in range(0, 37, 2))
    curve = Series(name="fitted share", x=months, y=tuple(m.share(t) for t in months), mode="lines",
                   sources=tuple(f"{MATURITY}: 1 - a exp(-t / tau), a {m.a:.3g}, tau {m.tau_months:.3g} months"
                                 for _ in months))  # fmt: skip
    obs = Series(name="observations (end of each pair)", x=tuple(float(o.end) for o in m.observations),
                 y=tuple(m.share(o.end) for o in m.observations),
                 sources=tuple(f"{MATURITY}: observations ({o.source})" for o in m.observations),
                 notes=tuple(f"{o.id}: {o.chip}, measured ratio {o.ratio:.3g} over months {o.start:g}-{o.end:g}"
                             for o in m.observations))  # fmt: skip
    return Chart(title="How long software takes to mature on a new chip", kind="line", x_title="months since debut",
                 y_title="share of mature efficiency", series=(curve, obs),
                 reading=f"A stack starts at {100 * m.share(0):.0f} % of its mature efficiency and reaches 90 % after "
                 f"{m.months_to(0.9):.0f} months.")  # fmt: skip


def software(study_compile: bool, fleet: FleetPlan, ours_option: Option, baseline: Option,
             ours: dict[str, str]) -> Section:  # fmt: skip
    """The software section; the compiler's part says how to install torch when it is missing."""
    demands = tuple(dp.demand for dp in fleet.demands)
    tables: list[Table] = []
    charts: list[Chart] = []
    notes: list[str] = []
    if not study_compile:
        notes.append("compiling: off in this study (compile: false)")
    else:
        try:
            tables.append(compile_table(demands, ours))
            numerics = numerics_chart(demands, ours)
            if numerics is not None:
                charts.append(numerics)
        except TapeoutError as exc:
            if INSTALL_TORCH not in str(exc):
                raise
            notes.append(f"compiling and numerics: not run here: {exc}")
    launch, launch_chart = launch_table(fleet, ours_option, baseline)
    return Section(
        key="software", title="Software", tables=(*tables, launch), charts=(*charts, launch_chart, maturity_chart()),
        notes=tuple(notes),
        intro="Whether the study's models compile for our chips, what each number format does to their results, "
        "and what the answer is with first-year software rather than mature software.",
    )  # fmt: skip
