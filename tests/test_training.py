import json

import pytest
from typer.testing import CliRunner

from tapeout.api import train
from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.parallel.training import TrainingPlan, communicator
from tapeout.perf.rules import op_cost
from tapeout.perf.system import System
from tapeout.search.training import search
from tapeout.sim.train import _ends_cost, _layer_cost, _Shape, model_flops_per_token, train_step
from tapeout.workloads.models import get_model
from tapeout.workloads.ops import ReduceScatter

LLAMA8 = get_model("llama-3.1-8b").config
LLAMA70 = get_model("llama-3.1-70b").config
GPT3 = get_model("gpt3-175b").config
MIXTRAL = get_model("mixtral-8x7b").config


def h100(chips):
    return System.of(get_chip("h100-sxm"), chips)


@pytest.mark.parametrize(
    ("plan", "chips", "message"),
    [
        (TrainingPlan(tp=3), 6, "'tp': 3 does not divide the 64 attention heads"),
        (TrainingPlan(tp=8, pp=3), 16, "'chips': 16 is not a multiple of tp x pp x cp = 24"),
        (TrainingPlan(tp=8, dp=3), 16, "'dp': 3, but 16 chips / \\(tp 8 x pp 1 x cp 1\\) = 2"),
        (TrainingPlan(ep=2), 2, "'ep': 2 for a model without experts"),
        (TrainingPlan(pp=1, vpp=2), 1, "'vpp': 2 interleaved chunks need pp > 1"),
        (
            TrainingPlan(micro_batch=3),
            8,
            "'global_batch': 64 sequences do not split into dp 8 x micro_batch 3",
        ),
    ],
)
def test_inconsistent_plans_say_why(plan, chips, message):
    with pytest.raises(TapeoutError, match=message):
        plan.resolve(LLAMA70, chips, 8192, 64)


def test_unknown_recompute_and_zero_are_refused():
    with pytest.raises(TapeoutError, match="field 'recompute': 'some'"):
        TrainingPlan(recompute="some")  # type: ignore[arg-type]
    with pytest.raises(TapeoutError, match="field 'zero': must be 0, 1, 2 or 3"):
        TrainingPlan(zero=4)


def test_a_plan_that_does_not_fit_names_the_overflow():
    with pytest.raises(
        TapeoutError, match=r"does not fit on h100-sxm: per chip weights .* exceed 80 GB by \d+\.\d GB"
    ):
        train_step(LLAMA70, h100(8), TrainingPlan(tp=8), seq_len=8192, global_batch=8)


def test_hybrid_sharding_is_checked_against_zero_and_the_data_parallel_ranks():
    with pytest.raises(TapeoutError, match="field 'zero_shard': 8 ranks, but zero 0 shards nothing"):
        TrainingPlan(zero_shard=8)
    with pytest.raises(
        TapeoutError, match="field 'zero_shard': must be an integer >= 1 and <= 1,000,000 ranks, got 0"
    ):
        TrainingPlan(zero=1, zero_shard=0)
    with pytest.raises(TapeoutError, match="field 'zero_shard': 3 ranks does not divide the dp x cp = 8"):
        TrainingPlan(zero=1, zero_shard=3).resolve(LLAMA8, 8, 4096, 64)


def test_hybrid_sharding_keeps_states_and_gathers_inside_each_group():
    """ZeRO-3 over the 8 data-parallel ranks of each node, replicated over 4 nodes, keeps four
    times the states of ZeRO-3 over all 32."""
    base = dict(seq_len=4096, global_batch=64, check_memory=False)
    full = train_step(LLAMA8, h100(32), TrainingPlan(zero=3), **base)
    same = train_step(LLAMA8, h100(32), TrainingPlan(zero=3, zero_shard=32), **base)
    hybrid = train_step(LLAMA8, h100(32), TrainingPlan(zero=3, zero_shard=8), **base)
    assert same.step_time_s == full.step_time_s and same.memory_gb == full.memory_gb
    for part in ("weights", "gradients", "optimizer"):
        assert hybrid.memory_gb[part] > full.memory_gb[part]
    assert hybrid.memory_gb["optimizer"] == pytest.approx(4 * full.memory_gb["optimizer"])
    assert hybrid.as_dict()["plan"]["zero_shard"] == 8
    # One-rank groups shard nothing: the plain all-reduce and whole states of zero 0.
    plain = train_step(LLAMA8, h100(32), TrainingPlan(zero=0), **base)
    alone = train_step(LLAMA8, h100(32), TrainingPlan(zero=1, zero_shard=1), **base)
    assert alone.step_time_s == pytest.approx(plain.step_time_s) and alone.memory_gb == plain.memory_gb


def test_model_flops_are_six_n_plus_attention():
    """From the forward graph: 6 N + causal attention, to 0.01 % (the norms' weights are
    parameters without matmul FLOPs; a causal query sees (s + 1) / 2 keys on average)."""
    c = LLAMA8
    n = c.active_param_count() - c.embedding_params()
    attention = 6 * c.num_hidden_layers * 4096 * (2 * c.num_attention_heads * c.dim_per_head) / 2
    assert model_flops_per_token(c, 4096) == pytest.approx(6 * n + attention, rel=1e-4)


def test_zero_shards_what_it_promises():
    base = dict(seq_len=4096, global_batch=64, check_memory=False)
    m0 = train_step(LLAMA8, h100(8), TrainingPlan(zero=0), **base).memory_gb
    m1 = train_step(LLAMA8, h100(8), TrainingPlan(zero=1), **base).memory_gb
    m2 = train_step(LLAMA8, h100(8), TrainingPlan(zero=2), **base).memory_gb
    assert m1["optimizer"] == pytest.approx(m0["optimizer"] / 8)
    assert m1["gradients"] == m0["gradients"] and m2["gradients"] == pytest.approx(m0["gradients"] / 8)


def test_pipeline_bubble_follows_1f1b_and_interleaving():
    base = dict(seq_len=4096, global_batch=64, check_memory=False)
    one = train_step(LLAMA70, h100(32), TrainingPlan(tp=8, pp=4, micro_batch=1), **base)
    inter = train_step(LLAMA70, h100(32), TrainingPlan(tp=8, pp=4, vpp=5, micro_batch=1), **base)
    assert one.dp == 1 and one.micro_batches == 64  # no data-parallel traffic: every part is per micro-batch
    for r, vpp in ((one, 1), (inter, 5)):
        b = r.breakdown_s
        per_mb = (b["compute"] + b["exposed_communication"]) / r.micro_batches
        assert b["pipeline_bubble"] == pytest.approx((4 - 1) / vpp * per_mb)
    assert inter.breakdown_s["pipeline_bubble"] < one.breakdown_s["pipeline_bubble"] / 2


def test_recompute_costs_time_and_saves_memory():
    base = dict(seq_len=4096, global_batch=64, check_memory=False)
    none = train_step(LLAMA8, h100(8), TrainingPlan(recompute="none"), **base)
    full = train_step(LLAMA8, h100(8), TrainingPlan(recompute="full"), **base)
    assert full.step_time_s > none.step_time_s
    assert full.memory_gb["activations"] < none.memory_gb["activations"] / 5
    assert full.hfu > full.mfu


def test_context_and_expert_parallel_run():
    mix = get_model("mixtral-8x7b").config
    r = train_step(mix, h100(32), TrainingPlan(tp=2, cp=2, ep=8, sequence_parallel=True, recompute="selective",
                                              zero=1), seq_len=8192, global_batch=16)  # fmt: skip
    assert r.dp == 8 and 0 < r.mfu < 1


def test_expert_states_shard_over_the_ranks_that_hold_the_expert():
    """An expert's copies sit on dp x cp / ep ranks: with ZeRO-1 its optimizer states are spread
    over those, so doubling ep halves the expert weights per chip but not the optimizer states."""
    mix = get_model("mixtral-8x7b").config
    base = dict(seq_len=8192, global_batch=16, check_memory=False)
    plan = dict(tp=2, cp=2, sequence_parallel=True, zero=1)
    ep4, ep8 = (train_step(mix, h100(32), TrainingPlan(**plan, ep=ep), **base).memory_gb for ep in (4, 8))
    assert ep8["optimizer"] == pytest.approx(ep4["optimizer"])
    assert ep8["weights"] < ep4["weights"]


def test_search_finds_a_fitting_plan_and_counts():
    r = search(LLAMA8, h100(8), seq_len=4096, global_batch=64)
    assert r.tried >= r.feasible > 0 and r.exhausted
    p = r.best.plan
    assert p.tp * p.pp * p.cp * r.best.dp == 8
    assert sum(r.failures.values()) == r.tried - r.feasible


def test_search_with_no_feasible_plan_says_what_failed():
    with pytest.raises(TapeoutError, match=r"no plan fits .* tried \d+ plans; they failed on \d+ x memory"):
        search(get_model("llama-3.1-405b").config, h100(8), seq_len=8192, global_batch=8)


def test_search_keeps_the_plan_fields_it_is_given():
    r = search(LLAMA8, h100(8), seq_len=4096, global_batch=64, fixed={"tp": 4, "zero": 1})
    assert (r.best.plan.tp, r.best.plan.zero) == (4, 1) and r.feasible > 0
    with pytest.raises(TapeoutError, match="field 'precision': not a plan choice the search makes"):
        search(LLAMA8, h100(8), seq_len=4096, global_batch=64, fixed={"precision": "fp8"})
    with pytest.raises(
        TapeoutError, match=r"global_batch 64, tp 3\): tried 0 plans; .*none is among the candidates"
    ):
        search(LLAMA8, h100(8), seq_len=4096, global_batch=64, fixed={"tp": 3})
    res = CliRunner().invoke(app, ["train", "llama-3.1-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len",
                                   "4096", "--global-batch", "64", "--search", "--tp", "2", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["plan"]["tp"] == 2


def test_search_budget_is_respected():
    r = search(LLAMA8, h100(8), seq_len=4096, global_batch=64, budget=50)
    assert r.tried == 50 and not r.exhausted


def test_train_api_and_cli_json():
    out = train("llama-3.1-8b", "h100-sxm", 8, seq_len=4096, global_batch=64, plan=TrainingPlan(zero=2))
    assert out.as_dict()["plan"]["dp"] == 8 and out.result.dp == 8
    res = CliRunner().invoke(app, ["train", "llama-3.1-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len",
                                   "4096", "--global-batch", "64", "--search", "--budget", "300", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["search"]["tried"] == 300 and data["tokens_per_s"] > 0
    res = CliRunner().invoke(app, ["train", "llama-3.1-8b", "--hardware", "h100-sxm", "--chips", "16", "--seq-len",
                                   "4096", "--global-batch", "64", "--zero", "2", "--zero-shard", "8", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["plan"]["zero_shard"] == 8


def test_train_rejects_unknown_precision_and_kernel_in_the_plan_and_the_cli():
    with pytest.raises(TapeoutError, match="field 'precision': unknown precision 'fp6'; known: bf16"):
        TrainingPlan(precision="fp6")  # type: ignore[arg-type]
    with pytest.raises(TapeoutError, match="field 'precision': unknown precision 'fp4'"):
        TrainingPlan(precision="fp4")  # training has no fp4 recipe
    with pytest.raises(TapeoutError, match="field 'attention': 'eager'; known: flash, unfused"):
        TrainingPlan(attention="eager")  # type: ignore[arg-type]
    res = CliRunner().invoke(app, ["train", "llama-3.1-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len",
                                   "4096", "--global-batch", "64", "--precision", "fp6"])  # fmt: skip
    assert isinstance(res.exception, TapeoutError) and "unknown precision 'fp6'" in str(res.exception)


def test_mla_models_train_on_their_latent_projections():
    ds = get_model("deepseek-v3").config
    r = train_step(ds, System.of(get_chip("h200-sxm"), 256), TrainingPlan(pp=16, ep=16, zero=1, recompute="full"),
                   seq_len=4096, global_batch=64, check_memory=False)  # fmt: skip
    assert r.dp == 16 and 0 < r.mfu < r.hfu < 1
    assert model_flops_per_token(ds, 4096) > 6 * (ds.active_param_count() - ds.embedding_params())


def test_tp_overlap_needs_sequence_parallel_and_hides_all_but_a_chunk():
    with pytest.raises(TapeoutError, match=r"'tp_overlap': .* needs tp > 1 and sequence_parallel"):
        TrainingPlan(tp=4, tp_overlap=True)
    base = dict(seq_len=4096, global_batch=64, check_memory=False)
    plain = train_step(LLAMA70, h100(32), TrainingPlan(tp=8, pp=4, sequence_parallel=True), **base)
    overlap = train_step(
        LLAMA70, h100(32), TrainingPlan(tp=8, pp=4, sequence_parallel=True, tp_overlap=True), **base
    )
    exposed = plain.breakdown_s["exposed_communication"], overlap.breakdown_s["exposed_communication"]
    assert exposed[0] / 8 <= exposed[1] < exposed[0] / 2  # one chunk of 8 stays exposed (p2p aside)
    assert overlap.breakdown_s["compute"] == plain.breakdown_s["compute"]


def test_a_strided_data_parallel_group_sends_more_over_the_network():
    """With tp 4 on 8-chip nodes a data-parallel group has 2 members per node, so its
    hierarchical reduce-scatter puts half of the buffer, not an eighth, on each NIC."""
    system = h100(64)
    op = ReduceScatter(ranks=16, bytes_per_rank=4e9)
    contiguous, strided, across = (op_cost(op, communicator(system, 16, stride=s)) for s in (1, 4, 8))
    assert contiguous.time_s < strided.time_s < across.time_s
    # 8 nodes in the ring, each NIC carrying its half of the buffer: (8 - 1) / 8 x 4 GB / 2.
    assert strided.network_bytes == pytest.approx(7 / 8 * 4e9 / 2)


def test_unfused_attention_is_slower_keeps_its_scores_and_refuses_context_parallelism():
    with pytest.raises(TapeoutError, match="unfused attention needs cp 1"):
        TrainingPlan(cp=2, attention="unfused")
    base = dict(seq_len=8192, global_batch=64, check_memory=False)
    fused = train_step(LLAMA8, h100(8), TrainingPlan(), **base)
    unfused = train_step(LLAMA8, h100(8), TrainingPlan(attention="unfused"), **base)
    assert unfused.step_time_s > fused.step_time_s
    # Scores and probabilities stay for the backward: 5 a s^2 b bytes per layer, 32 heads and 32 layers.
    extra = (unfused.memory_gb["activations"] - fused.memory_gb["activations"]) * 1e9
    assert extra == pytest.approx(5 * 32 * 8192**2 * 32, rel=1e-6)
    selective = train_step(LLAMA8, h100(8), TrainingPlan(attention="unfused", recompute="selective"), **base)
    assert selective.memory_gb["activations"] == pytest.approx(fused.memory_gb["activations"])


def test_eight_bit_training_keeps_its_matmul_inputs_as_eight_bit_casts():
    """Of Korthikanti's 34 s b h bytes per GPT layer, the four products' inputs (14) take half."""
    base = dict(seq_len=2048, global_batch=64, check_memory=False)
    plan = dict(tp=8, pp=8, sequence_parallel=True)
    bf16 = train_step(GPT3, h100(64), TrainingPlan(**plan), **base)
    fp8 = train_step(GPT3, h100(64), TrainingPlan(**plan, precision="fp8"), **base)
    assert fp8.memory_gb["activations"] == pytest.approx(bf16.memory_gb["activations"] * 27 / 34)


def test_activations_are_korthikantis_34_sbh_for_a_gpt_layer():
    """pp 1 keeps one micro-batch in flight: layers x s b h x 34 / tp bytes with sequence parallelism."""
    base = dict(seq_len=2048, global_batch=8, check_memory=False)
    r = train_step(GPT3, h100(8), TrainingPlan(tp=8, sequence_parallel=True), **base)
    expected = GPT3.num_hidden_layers * 2048 * GPT3.hidden_size * 34 / 8
    assert r.memory_gb["activations"] * 1e9 == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("tp", "ep"), [(1, 8), (2, 4)])
def test_each_routed_expert_adds_its_copy_mlp_and_output_to_the_activations(tp, ep):
    """One more expert per token keeps its routed copy (2h) and its output (2h), whole on every
    tensor-parallel rank even with sequence parallelism, and its gated MLP's up-projections and
    product (3 x 2 x 14336), split over them: 25 h bytes per token and layer for Mixtral at tp 1."""
    base = dict(seq_len=4096, global_batch=8, check_memory=False)
    top1, top2 = (MIXTRAL.model_copy(update={"num_experts_per_tok": k}) for k in (1, 2))
    plan = TrainingPlan(tp=tp, ep=ep, sequence_parallel=tp > 1)
    one = train_step(top1, h100(8), plan, **base).memory_gb["activations"]
    two = train_step(top2, h100(8), plan, **base).memory_gb["activations"]
    h = MIXTRAL.hidden_size
    per_layer = 4096 * h * (2 + 2 + 6 * 14336 / h / tp)
    assert (two - one) * 1e9 == pytest.approx(MIXTRAL.num_hidden_layers * per_layer, rel=1e-9)


def test_eight_bit_training_keeps_the_output_layer_in_16_bits():
    """fp8 recipes cover the layers' linear modules, not the output layer: its products cost as
    in bf16, while a layer's get faster."""
    shapes = {prec: _Shape.of(TrainingPlan(tp=8, precision=prec), 8192) for prec in ("bf16", "fp8")}
    heads = {prec: _ends_cost(LLAMA8, h100(8), shape, False)[0].time_s for prec, shape in shapes.items()}
    layers = {
        prec: _layer_cost(LLAMA8, h100(8), shape, False).forward.time_s for prec, shape in shapes.items()
    }
    assert heads["fp8"] == pytest.approx(heads["bf16"])
    assert layers["fp8"] < 0.75 * layers["bf16"]


def test_ep_overlap_hides_the_all_to_alls_under_compute_and_needs_experts():
    with pytest.raises(TapeoutError, match=r"'ep_overlap': .* needs ep > 1"):
        TrainingPlan(ep_overlap=True)
    mix = get_model("mixtral-8x7b").config
    base = dict(seq_len=4096, global_batch=64, check_memory=False)
    plain, hidden = (
        train_step(mix, h100(64), TrainingPlan(tp=2, ep=8, zero=1, ep_overlap=o), **base)
        for o in (False, True)
    )
    assert hidden.breakdown_s["exposed_communication"] < plain.breakdown_s["exposed_communication"]
    assert hidden.breakdown_s["compute"] == pytest.approx(plain.breakdown_s["compute"])
