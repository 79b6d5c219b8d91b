import json

import numpy as np
import pytest

from tapeout.api import serve
from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.parallel.inference import InferencePlan
from tapeout.perf.system import System
from tapeout.search.serving import server
from tapeout.sim import scenarios
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.requests import Lengths, Requests
from tapeout.sim.serve import simulate
from tapeout.workloads.models import get_model

FP8 = {"precision": "fp8"}


def replica(model="llama-2-7b", chip="h100-sxm", chips=1, **plan):
    return Replica.of(get_model(model).config, System.of(get_chip(chip), chips), InferencePlan(**plan))


# ---- plans and memory ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "chips", "plan", "message"),
    [
        ("llama-2-70b", 6, {"tp": 3}, "'tp': 3 does not divide the 64 attention heads"),
        ("llama-2-70b", 6, {"tp": 4}, "'chips': 6 of h100-sxm is not a multiple of the 4 chips"),
        ("llama-2-70b", 8, {"tp": 2, "pp": 2, "ep": 2}, "'ep': 2 for a model without experts"),
        ("mixtral-8x7b", 6, {"tp": 3, "ep": 3}, "does not divide the 32 attention heads"),
        ("llama-2-7b", 1, {"pp": 40}, "'pp': 40 pipeline stages for a model of 32 layers"),
    ],
)
def test_impossible_parallelism_says_why(model, chips, plan, message):
    with pytest.raises(TapeoutError, match=message):
        InferencePlan(**plan).replicas(get_model(model).config, chips, "h100-sxm")


def test_zero_chips_is_refused():
    with pytest.raises(TapeoutError, match="field 'chips': must be >= 1, got 0"):
        InferencePlan().replicas(get_model("llama-2-7b").config, 0)


def test_serve_rejects_impossible_lengths():
    with pytest.raises(
        TapeoutError,
        match=r"field 'output_len': must be a finite number >= 1 and <= 100,000,000 tokens, got 0",
    ):
        serve("llama-2-7b", "h100-sxm", output_len=0)


def test_tp_and_ep_must_nest():
    with pytest.raises(TapeoutError, match="one must divide the other"):
        InferencePlan(tp=2, ep=3)


def test_unknown_precision_is_named():
    with pytest.raises(TapeoutError, match="field 'kv_precision': unknown precision 'fp6'"):
        InferencePlan(kv_precision="fp6")  # type: ignore[arg-type]


def test_a_model_that_does_not_fit_names_chip_and_overflow():
    with pytest.raises(
        TapeoutError, match=r"does not fit on h100-sxm: per chip, weights 8\d\d\.\d GB .* by \d+\.\d GB"
    ):
        replica("llama-3.1-405b", "h100-sxm", 1)


def test_kv_bytes_per_token_follow_the_architecture():
    # Llama-2-70B: 80 layers x 8 kv heads x (k + v) x 128 dims, split over tp 2, in fp8.
    r = replica("llama-2-70b", chips=2, tp=2, **FP8)
    assert r.memory.kv_bytes_per_token == 80 * (8 // 2) * 2 * 128 * 1
    # More chips than kv heads: each chip keeps one kv head.
    r16 = replica("llama-2-7b", chips=1)
    assert r16.memory.kv_bytes_per_token == 32 * 32 * 2 * 128 * 2
    # DeepSeek-V3: the MLA latent (512 + 64 rope dims) per layer, on every chip.
    ds = replica("deepseek-v3", "h200-sxm", 8, tp=8, ep=8, **FP8)
    assert ds.memory.kv_bytes_per_token == 61 * (512 + 64) * 1


def test_weights_split_across_the_replica():
    one = replica("llama-2-70b", chips=2, tp=2, **FP8).memory.weights_bytes
    four = replica("llama-2-70b", chips=4, tp=4, **FP8).memory.weights_bytes
    assert one / four == pytest.approx(2.0, rel=0.01)
    assert one == pytest.approx(get_model("llama-2-70b").config.param_count() / 2, rel=0.01)


# ---- iterations ---------------------------------------------------------------------------
def test_batch_one_decode_is_bound_by_weight_reads():
    r = replica("llama-2-7b", "a100-sxm-80gb")
    step = r.step(Batch(decode_seqs=1, decode_context=100))
    weights = get_model("llama-2-7b").config.param_count() * 2
    assert step.bound == "memory"
    assert weights / get_chip("a100-sxm-80gb").memory_bandwidth < step.time_s < 1.5 * weights / 1.5e12


def test_iteration_time_grows_with_tokens_and_context():
    r = replica("llama-2-70b", chips=2, tp=2, **FP8)
    times = [r.step_time(Batch(prefill_tokens=t, prefill_seqs=1, prefill_context=t)) for t in (64, 512, 4096)]
    assert times == sorted(times)
    short = r.step_time(Batch(decode_seqs=64, decode_context=64 * 100))
    long = r.step_time(Batch(decode_seqs=64, decode_context=64 * 8000))
    assert long > short
    assert r.step(Batch(prefill_tokens=8192, prefill_seqs=1, prefill_context=8192)).bound in (
        "compute",
        "power",
    )


def test_replicas_of_one_model_system_and_plan_share_their_costs():
    a, b = replica(), replica()
    assert a._costs is b._costs and replica(precision="fp8")._costs is not a._costs
    batch = Batch(
        prefill_tokens=300, prefill_seqs=2, prefill_context=900, decode_seqs=40, decode_context=9000
    )
    assert a.step_time(batch) == b.step_time(batch)


def test_step_time_equals_step():
    r = replica("mixtral-8x7b", chips=2, tp=2, ep=2, **FP8)
    b = Batch(
        prefill_tokens=300, prefill_seqs=2, prefill_context=500, decode_seqs=40, decode_context=40 * 700
    )
    assert r.step_time(b) == pytest.approx(r.step(b).time_s)


def test_pipeline_stages_and_tensor_parallel_add_communication():
    tp = replica("llama-2-70b", chips=4, tp=4, **FP8).step(Batch(decode_seqs=32, decode_context=32 * 500))
    pp = replica("llama-2-70b", chips=4, tp=2, pp=2, **FP8).step(
        Batch(decode_seqs=32, decode_context=32 * 500)
    )
    assert tp.parts["communication"].time_s > 0
    assert pp.parts["communication"].time_s > 0


def test_expert_parallel_beyond_tp_uses_all_to_all():
    r = replica("deepseek-v3", "h200-sxm", 8, tp=1, ep=8, **FP8)
    assert r.plan.attention_groups == 8
    step = r.step(Batch(decode_seqs=64, decode_context=64 * 1000))
    assert step.parts["communication"].link_bytes > 0


# ---- requests -----------------------------------------------------------------------------
def test_fixed_fractional_lengths_keep_their_mean():
    lengths = Lengths(kind="fixed", mean=222.3).sample(1000, np.random.default_rng(0))
    assert lengths.sum() == 222300
    assert set(lengths.tolist()) == {222, 223}


def test_poisson_arrivals_have_the_rate():
    reqs = Requests.poisson(20000, 50.0, 100, 10)
    assert len(reqs) / reqs.arrival_s[-1] == pytest.approx(50.0, rel=0.03)


def test_trace_files_load(tmp_path):
    jl = tmp_path / "t.jsonl"
    jl.write_text(
        '{"arrival_s": 0.5, "input_len": 10, "output_len": 3}\n\n{"arrival_s": 0.1, "input_len": 7, "output_len": 2}\n'
    )
    reqs = Requests.from_trace(jl)
    assert reqs.arrival_s.tolist() == [0.1, 0.5] and reqs.input_len.tolist() == [7, 10]
    csv = tmp_path / "t.csv"
    csv.write_text("arrival_s,input_len,output_len\n0,5,5\n1.5,6,1\n")
    assert Requests.from_trace(csv).output_len.tolist() == [5, 1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "a.csv",
            "arrival_s,input_len,output_len\n0,5,5\n1,5.5,2\n",
            r"line 3: field 'input_len' must be an integer >= 1 and <= 100,000,000 tokens, got '5.5'",
        ),
        ("b.csv", "arrival_s,input_len\n0,5\n", "header lacks column\\(s\\) output_len"),
        ("c.jsonl", '{"arrival_s": 0, "input_len": 5}\n', "line 1: field 'output_len' is missing"),
        (
            "d.jsonl",
            '{"arrival_s": -1, "input_len": 5, "output_len": 1}\n',
            "field 'arrival_s' must be a number >= 0 and <= 3,200,000,000 seconds",
        ),
        ("e.jsonl", "{oops\n", "line 1: not valid JSON"),
    ],
)
def test_a_bad_trace_row_is_named(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TapeoutError, match=message):
        Requests.from_trace(path)


# ---- the simulator ------------------------------------------------------------------------
def test_every_request_finishes_with_its_tokens():
    r = replica()
    reqs = Requests.poisson(
        300, 20.0, Lengths(kind="uniform", low=10, high=400), Lengths(kind="uniform", low=1, high=100)
    )
    res = simulate(r, reqs)
    assert res.output_tokens == int(reqs.output_len.sum())
    assert np.all(res.ttft_s > 0) and np.all(res.e2e_s >= res.ttft_s)


def test_lockstep_batch_matches_a_hand_computed_schedule():
    """The reference path: n prompts prefilled in one iteration, then decoded together."""
    r = replica()
    n, prompt, out = 16, 100, 20
    res = simulate(r, Requests.offline(n, prompt, out))
    expected = r.step_time(Batch(prefill_tokens=n * prompt, prefill_seqs=n, prefill_context=n * prompt))
    for i in range(1, out):
        expected += r.step_time(Batch(decode_seqs=n, decode_context=n * (prompt + i)))
    assert res.duration_s == pytest.approx(expected, rel=1e-9)
    assert res.iterations == out


def test_token_budget_chunks_prefill():
    r = replica()
    res = simulate(r, Requests.offline(1, 1000, 2), max_tokens=256)
    assert res.iterations == 4 + 1  # four chunks of at most 256 tokens, then one decode


def test_a_full_cache_preempts_and_everything_still_finishes():
    r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")), kv_memory_fraction=0.004)
    reqs = Requests.offline(64, 200, 200)
    res = simulate(r, reqs, admission="greedy")
    assert res.preemptions > 0
    assert res.output_tokens == 64 * 200


@pytest.mark.parametrize("admission", ["greedy", "reserve"])
def test_the_cache_pages_add_up_at_every_iteration(admission):
    """The policy keeps decoding sequences by the iteration they joined; at every iteration their
    pages and tokens match a sequence-by-sequence count, and every page comes back at the end."""
    from tapeout.sim.policies.base import Ledger
    from tapeout.sim.policies.continuous import Continuous

    r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")), kv_memory_fraction=0.004)
    reqs = Requests.poisson(
        80, 200.0, Lengths(kind="uniform", low=20, high=300), Lengths(kind="uniform", low=2, high=120)
    )
    policy = Continuous(r, Ledger(reqs), admission=admission)
    engine = policy.engines[0]
    while policy.next_engine() is not None:
        batch = policy.schedule(engine)
        if batch is None:
            continue
        kv = {rid: kv0 + policy.tick for rid, (kv0, _) in policy.decoding.items()}
        assert batch.decode_context == sum(kv.values()) + len(kv)
        if admission == "greedy":  # pages of the decoding sequences, the token this iteration adds included
            held = sum(policy._pages(k + 1) for k in kv.values())
        else:
            held = sum(int(policy.held[rid]) for rid in kv)
        prompts = sum(int(policy.held[p.rid]) for p in policy.prompts)
        assert policy.free_pages + held + prompts == policy.total_pages
        engine.clock += r.step_time(batch)
        policy.complete(engine, batch)
    assert policy.free_pages == policy.total_pages and policy.kv_sum == 0
    assert policy.ledger.generated.sum() == reqs.output_len.sum()
    assert (policy.ledger.preemptions > 0) == (admission == "greedy")  # the cache ran full


def test_reserved_admission_never_preempts():
    r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")), kv_memory_fraction=0.004)
    res = simulate(r, Requests.offline(64, 200, 200), admission="reserve")
    assert res.preemptions == 0 and res.output_tokens == 64 * 200


def test_a_request_larger_than_the_cache_is_refused():
    r = Replica.of(get_model("llama-2-7b").config, System.of(get_chip("h100-sxm")), kv_memory_fraction=0.001)
    with pytest.raises(TapeoutError, match="request 0: 100000 input \\+ 10 output tokens need"):
        simulate(r, Requests.offline(1, 100000, 10))


def test_disaggregated_serving_moves_caches_and_finishes():
    r = replica("llama-2-7b", chips=1)
    reqs = Requests.poisson(200, 5.0, 500, 50)
    mixed = simulate(r, reqs)
    split = simulate(r, reqs, policy="disaggregated", prefill_replicas=1, decode_replicas=1)
    assert split.output_tokens == mixed.output_tokens
    # With prefill apart, decode iterations never carry a prompt: TPOT is steadier.
    assert np.nanpercentile(split.tpot_s, 99) <= np.nanpercentile(mixed.tpot_s, 99)


def test_unknown_policy_lists_the_known():
    with pytest.raises(TapeoutError, match="known: continuous, disaggregated"):
        simulate(replica(), Requests.offline(1, 10, 2), policy="fifo")


def test_goodput_counts_only_requests_within_limits():
    r = replica()
    res = simulate(r, Requests.poisson(200, 30.0, 200, 50), ttft_limit_s=1e-6)
    assert res.goodput_tokens_per_s == 0.0
    res = simulate(r, Requests.poisson(200, 30.0, 200, 50), ttft_limit_s=100.0, tpot_limit_s=100.0)
    assert res.goodput_tokens_per_s == pytest.approx(res.tokens_per_s)


# ---- scenarios ----------------------------------------------------------------------------
def test_offline_picks_the_batch_the_cache_holds():
    r = replica("llama-2-70b", chips=2, tp=2, **FP8)
    batch = scenarios.auto_batch(r, 1000, 1000)
    assert batch * 2000 <= r.memory.kv_tokens < (batch + 1) * 2016
    result = scenarios.offline(r, 1000, 1000)
    assert result.batch == batch and result.tokens_per_s > 0


def test_server_rate_meets_the_limits():
    r = replica("llama-2-7b")
    res = server(r, 200, 100, ttft_limit_s=0.5, tpot_limit_s=0.05, batch=64, requests=400)
    assert res.rate_per_s and res.rate_per_s > 0
    assert res.result is not None
    s = res.result.summary()
    assert s["ttft_s"]["p99"] <= 0.5 and s["tpot_s"]["p99"] <= 0.05
    assert res.tokens_per_s == pytest.approx(res.rate_per_s * 100)


def test_server_search_steps_out_from_the_model_and_bisects():
    from tapeout.search.serving import highest

    seen: list[float] = []

    def ok(x: float) -> bool:
        seen.append(x)
        return x <= 5.0

    # 25 % above the start: steps of 1.25, 2.5, 5, 10, 20, 40 % bracket it, bisection narrows it.
    assert 5.0 / 1.0125 < highest(ok, 4.0, resolution=0.0125, steps=10) <= 5.0
    assert len(seen) <= 1 + 6 + 5
    seen.clear()
    assert 5.0 / 1.0125 < highest(ok, 5.0 * 0.998, resolution=0.0125, steps=10) <= 5.0  # a close start
    assert len(seen) == 2
    assert highest(lambda x: False, 4.0, resolution=0.0125, steps=5) == 0.0
    assert highest(lambda x: True, 4.0, resolution=0.0125, steps=3) == pytest.approx(4.0 * 1.05)


def test_fixed_batch_is_batch_over_step():
    r = replica("llama-2-7b", "a100-sxm-80gb")
    res = scenarios.fixed_batch(r, 5, None, batch=4)
    assert res.tokens_per_s == pytest.approx(4 / r.step_time(Batch(decode_seqs=4, decode_context=4 * 6)))


def test_fixed_batch_that_overflows_the_cache_is_refused():
    with pytest.raises(TapeoutError, match="field 'batch': 100000 sequences"):
        scenarios.fixed_batch(replica(), 1000, 1000, batch=100000)


# ---- API and CLI --------------------------------------------------------------------------
def test_serve_api_reports_throughput_latency_memory_and_limiters():
    out = serve("llama-2-70b", "h100-sxm", 8, InferencePlan(tp=2, precision="fp8"), input_len=200, output_len=50,
                rate=20.0, requests=200)  # fmt: skip
    assert out.replicas == 4 and out.arrivals == "poisson"
    assert set(out.percentiles("ttft_s")) == {"mean", "p50", "p90", "p99"}
    assert out.memory.weights_bytes == pytest.approx(35e9, rel=0.05)
    assert out.decode.bound in ("compute", "memory", "network", "latency", "power")
    data = out.as_dict()
    assert data["plan"]["replicas"] == 4 and data["memory_per_chip"]["weights_gb"] == pytest.approx(
        35, rel=0.05
    )


def test_serve_cli_json_and_bad_trace(tmp_path, capsys):
    from typer.testing import CliRunner

    from tapeout.cli import app, main

    runner = CliRunner()
    res = runner.invoke(app, ["serve", "llama-2-7b", "--hardware", "h100-sxm", "--chips", "1", "--requests", "50", "--input-len", "64",
                              "--output-len", "16", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["requests"] == 50 and data["tokens_per_s"] > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,input_len,output_len\n0,abc,3\n")
    import sys

    argv = sys.argv
    sys.argv = [
        "tapeout",
        "serve",
        "llama-2-7b",
        "--hardware",
        "h100-sxm",
        "--chips",
        "1",
        "--trace",
        str(bad),
    ]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    assert exc.value.code == 2
    assert "line 2: field 'input_len'" in capsys.readouterr().err


def test_layers_only_leaves_out_embeddings_and_head():
    model = get_model("llama-2-7b").config.with_layers(4)
    sys = System.of(get_chip("h100-sxm"))
    full = Replica.of(model, sys)
    alone = Replica.of(model, sys, layers_only=True)
    emb_head = (
        get_model("llama-2-7b").config.embedding_params() + get_model("llama-2-7b").config.head_params()
    )
    assert full.memory.weights_bytes - alone.memory.weights_bytes == pytest.approx(2 * emb_head)
    b = Batch(decode_seqs=8, decode_context=8 * 100)
    assert alone.step(b).parts["head"].time_s == 0.0 < full.step(b).parts["head"].time_s
