import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tapeout.cli import app
from tapeout.cost.tco import chip_tco
from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.parallel.recsys import RecsysPlan
from tapeout.plan import fleet, parse_demand
from tapeout.plan.allocate import Option, allocate, groups_needed
from tapeout.plan.capacity import CHECK_TOLERANCE, Capacity, recsys_capacity, serving_capacity
from tapeout.plan.pricing import price
from tapeout.search.serving import checked_rate, server

ROOT = Path(__file__).resolve().parents[1]
RANK = {
    "kind": "recsys",
    "name": "rank",
    "model": "dlrm-v2",
    "latency_limit_s": 0.01,
    "pairs_per_sample": 100,
}
CHAT = {"kind": "serving", "name": "chat", "model": "llama-3.1-8b", "precision": "fp8", "input_len": 256,
        "output_len": 64, "ttft_limit_s": 1.0, "tpot_limit_s": 0.05}  # fmt: skip


def demand(candidates, *demands, **extra):
    return parse_demand({"candidates": candidates, "demands": list(demands), **extra})


def test_recsys_fleet_is_the_capacity_formula():
    out = fleet.plan(demand([{"hardware": "h100-sxm"}], {**RANK, "qps": 1e6})).as_dict()
    cap = recsys_capacity(parse_demand({"candidates": [{"hardware": "h100-sxm"}],
                                              "demands": [{**RANK, "qps": 1e6}]}).demands[0], "h100-sxm")  # fmt: skip
    chips = math.ceil(1e6 / cap.units_per_s) * cap.chips
    tco = chip_tco(31905, get_chip("h100-sxm").tdp_w)  # the newest catalog price
    assert out["demands"][0]["chips"] == chips
    assert out["total_tco_usd"] == pytest.approx(chips * tco.total_usd)
    assert out["demands"][0]["usd_per_thousand_samples"] == pytest.approx(
        chips * tco.usd_per_hour / (1e6 * 3600) * 1e3
    )


@pytest.mark.slow
def test_doubling_demand_doubles_chips():
    one = fleet.plan(demand([{"hardware": "h100-sxm"}], {**RANK, "qps": 2e6})).as_dict()["total_chips"]
    two = fleet.plan(demand([{"hardware": "h100-sxm"}], {**RANK, "qps": 4e6})).as_dict()["total_chips"]
    assert abs(two - 2 * one) <= 1  # whole groups round up


def test_levy_and_price_override_scale_the_tco():
    base = fleet.plan(demand([{"hardware": "h100-sxm", "price_usd": 20000}], {**RANK, "qps": 1e6})).as_dict()
    levied = fleet.plan(
        demand([{"hardware": "h100-sxm", "price_usd": 20000, "levy": 0.25}], {**RANK, "qps": 1e6})
    )
    chips = base["total_chips"]
    tdp = get_chip("h100-sxm").tdp_w
    assert base["total_tco_usd"] == pytest.approx(chips * chip_tco(20000, tdp).total_usd)
    assert levied.total_tco_usd == pytest.approx(chips * chip_tco(25000, tdp).total_usd)
    assert levied.as_dict()["candidates"][0]["price_source"] == "demand file (price_usd)"


@pytest.mark.slow
def test_a_cap_forces_a_split():
    free = fleet.plan(demand([{"hardware": "h100-sxm"}, {"hardware": "a100-sxm-80gb"}], {**RANK, "qps": 2e6}))
    best = free.as_dict()["chips"][0]
    assert len(free.as_dict()["chips"]) == 1
    capped = fleet.plan(demand([{"hardware": best["hardware"], "max_chips": best["chips"] // 2},
                                {"hardware": "h100-sxm" if best["hardware"] != "h100-sxm" else "a100-sxm-80gb"}],
                               {**RANK, "qps": 2e6})).as_dict()  # fmt: skip
    assert len(capped["chips"]) == 2
    assert capped["chips"][0]["chips"] <= best["chips"] // 2
    assert capped["total_tco_usd"] > free.total_tco_usd


def test_allocate_matches_brute_force_on_a_small_case():
    a = Capacity(chips=2, units_per_s=30.0, plan=RecsysPlan())
    b = Capacity(chips=1, units_per_s=10.0, plan=RecsysPlan())
    opts = {
        "x": [Option(demand="x", candidate="A", cap=a, tco_per_chip_usd=3.0),
              Option(demand="x", candidate="B", cap=b, tco_per_chip_usd=2.0)],
        "y": [Option(demand="y", candidate="A", cap=a, tco_per_chip_usd=3.0)],
    }  # fmt: skip
    rates, caps = {"x": 100.0, "y": 60.0}, {"A": 6.0, "B": 20.0}
    got = allocate(rates, opts, caps)
    cost = sum(g * o.cap.chips * o.tco_per_chip_usd for d in got for o in opts[d] for c, g in got[d].items()
               if c == o.candidate)  # fmt: skip
    best = math.inf
    for xa in range(4):
        for xb in range(21):
            ya = groups_needed(60.0, a)
            if (xa + ya) * 2 <= 6 and xb <= 20 and xa * 30 + xb * 10 >= 100:
                best = min(best, xa * 2 * 3.0 + xb * 2.0 + ya * 2 * 3.0)
    assert cost == best
    assert got["y"] == {"A": 2}  # y has no substitute: it gets the shared cap first


@pytest.mark.slow
def test_caps_that_leave_a_demand_short_name_it():
    with pytest.raises(TapeoutError, match="demand 'rank': the availability caps leave it short"):
        fleet.plan(demand([{"hardware": "h100-sxm", "max_chips": 1}], {**RANK, "qps": 1e7}))


def test_impossible_demands_say_which_and_why():
    with pytest.raises(TapeoutError, match=r"demand 'big': no candidate can meet it: .*does not fit"):
        fleet.plan(demand([{"hardware": "h20"}], {**CHAT, "name": "big", "model": "llama-3.1-405b",
                                                 "precision": "bf16", "tokens_per_s": 1e3}))  # fmt: skip
    with pytest.raises(
        TapeoutError, match=r"demand 'fast': no candidate can meet it: .*latency limits not met"
    ):
        fleet.plan(demand([{"hardware": "h100-sxm"}], {**CHAT, "name": "fast", "tpot_limit_s": 1e-5,
                                                      "tokens_per_s": 1e3}))  # fmt: skip


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"demands": [{**RANK, "qps": -5}]}, ["demands.0.recsys.qps", "-5", "samples (queries) per second"]),
        ({"demands": [{**CHAT, "ttft_limit_s": 0, "tokens_per_s": 1}]}, ["ttft_limit_s", "0", "seconds"]),
        ({"candidates": [{"hardware": "h20", "price_usd": "cheap"}]}, ["price_usd", "cheap", "US dollars"]),
        ({"demands": [{**CHAT}]}, ["exactly one of tokens_per_s"]),
        ({"demands": [{**RANK, "qps": 1, "deadline_days": 3}]}, ["deadline_days", "unknown field"]),
        ({"tco": {"years": -1}}, ["years", "-1"]),
    ],
)
def test_bad_fields_are_named_with_value_and_unit(patch, words):
    data = {"candidates": [{"hardware": "h100-sxm"}], "demands": [{**RANK, "qps": 1e5}], **patch}
    with pytest.raises(TapeoutError) as err:
        parse_demand(data)
    for w in words:
        assert w in str(err.value)


def test_a_candidate_without_a_price_is_named():
    with pytest.raises(TapeoutError, match=r"candidate 'mi325x'.*price_usd"):
        fleet.plan(demand([{"hardware": "mi325x"}], {**RANK, "qps": 1e5}))


@pytest.mark.slow
def test_serving_capacity_of_is_chips_times_capacity_per_chip():
    d = demand([{"hardware": "h100-sxm"}], {**CHAT, "capacity_of": {"hardware": "h100-sxm", "chips": 1000}})
    out = fleet.plan(d).as_dict()["demands"][0]
    assert out["chips"] == 1000
    assert out["fleet"][0]["plan"]["tp"] == 1


@pytest.mark.slow
def test_training_needs_more_chips_for_a_tighter_deadline():
    run = {"kind": "training", "name": "pre", "model": "llama-3.1-8b", "tokens": 2e11, "seq_len": 4096,
           "global_batch": 256}  # fmt: skip
    slow = fleet.plan(demand([{"hardware": "h100-sxm"}], {**run, "deadline_days": 60})).as_dict()["demands"][
        0
    ]
    fast = fleet.plan(demand([{"hardware": "h100-sxm"}], {**run, "deadline_days": 15})).as_dict()["demands"][
        0
    ]
    assert fast["chips"] > slow["chips"]
    assert fast["fleet"][0]["plan"]["run_days"] <= 15
    # One run's price: its chips for its duration at the chip-hour rate.
    hour = chip_tco(31905, get_chip("h100-sxm").tdp_w).usd_per_hour
    assert slow["usd_per_run"] == pytest.approx(
        slow["chips"] * hour * slow["fleet"][0]["plan"]["run_days"] * 24
    )


@pytest.mark.slow
def test_in_house_break_even_volume_costs_what_the_bought_fleet_costs():
    from tapeout.cost.unit import unit_cost

    out = fleet.plan(
        demand([{"hardware": "h100-sxm"}, {"hardware": "tapeout-i1"}], {**RANK, "qps": 1e6})
    ).as_dict()
    be = out["demands"][0]["break_even"][0]
    assert be["candidate"] == "tapeout-i1"
    chip = get_chip("tapeout-i1")
    if be["volume"] is not None and be["volume"] > 1:
        at = (
            be["fleet_chips"] * chip_tco(unit_cost(chip, volume=be["volume"]).total_usd, chip.tdp_w).total_usd
        )
        assert at <= be["bought_fleet_tco_usd"] < at * 1.01


@pytest.mark.slow
def test_cli_plan_json_has_total_tco(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"candidates": [{"hardware": "h100-sxm"}], "demands": [{**RANK, "qps": 1e5}]}))
    res = CliRunner().invoke(app, ["plan", str(path), "--json", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["total_tco_usd"] > 0
    table = CliRunner().invoke(app, ["plan", str(path), "--workers", "1"])
    assert "total TCO" in table.output


def test_example_file_parses():
    from tapeout.plan import load_demand

    d = load_demand(ROOT / "examples" / "plan-h20-fleet.yaml")
    assert [c.key for c in d.candidates] == ["h20", "h200-sxm", "h100-sxm", "tapeout-i1"]
    assert d.candidates[1].levy == 0.25


# ---- the serving capacity model ---------------------------------------------------------------
SMALL = {
    "model": "llama-2-7b",
    "input_len": 512,
    "output_len": 128,
    "ttft_limit_s": 1.0,
    "tpot_limit_s": 0.02,
}


def small_model():
    from tapeout.api import replica as make_replica
    from tapeout.parallel.inference import InferencePlan
    from tapeout.sim.capacity import ServingModel
    from tapeout.sim.scenarios import auto_batch

    replica, _, _ = make_replica(SMALL["model"], "h100-sxm", 1, InferencePlan())
    batch = auto_batch(replica, SMALL["input_len"], SMALL["output_len"])
    return replica, ServingModel(replica, SMALL["input_len"], SMALL["output_len"], max_batch=batch)


@pytest.mark.slow
def test_fast_capacity_agrees_with_the_simulated_server_search():
    replica, model = small_model()
    fast = model.capacity(ttft_limit_s=SMALL["ttft_limit_s"], tpot_limit_s=SMALL["tpot_limit_s"])
    full = server(replica, SMALL["input_len"], SMALL["output_len"], ttft_limit_s=SMALL["ttft_limit_s"],
                  tpot_limit_s=SMALL["tpot_limit_s"]).rate_per_s  # fmt: skip
    assert fast == pytest.approx(full, rel=0.10)  # the tolerance docs/plan.md states


def test_capacity_model_mean_state_and_lone_request():
    _, model = small_model()
    rate = 10.0
    load = model.load(rate)
    assert load.decode_batch == pytest.approx(rate * (SMALL["output_len"] - 1) * load.iteration_s)  # Little
    assert load.iteration_s == pytest.approx(load.decode_s / (1 - rate * load.prefill_s), rel=1e-6)
    alone = model.load(1e-6)
    assert model.tpot_quantile(1e-6) == pytest.approx(model.decode_s(1), rel=1e-3)
    assert alone.prefill_s <= model.ttft_quantile(1e-6) <= alone.prefill_s + 2 * alone.decode_s
    assert model.tpot_quantile(rate) > model.tpot_quantile(rate / 2)  # the tail grows with the rate
    assert model.load(1e6) is None  # no replica keeps up with a million requests a second


@pytest.mark.slow
def test_a_rate_that_fails_its_check_is_replaced_by_simulation():
    replica, model = small_model()
    rate = model.capacity(ttft_limit_s=SMALL["ttft_limit_s"], tpot_limit_s=SMALL["tpot_limit_s"])
    got, seen = checked_rate(replica, model, SMALL["input_len"], SMALL["output_len"], rate=2 * rate, tolerance=0.0,
                             ttft_limit_s=SMALL["ttft_limit_s"], tpot_limit_s=SMALL["tpot_limit_s"])  # fmt: skip
    assert seen["capacity_from"].startswith("simulation")
    assert rate / 2 <= got < 2 * rate
    assert seen["simulated_p99_tpot_s"] <= SMALL["tpot_limit_s"]


@pytest.mark.slow
def test_serving_capacity_is_the_models_rate_when_the_check_passes():
    d = demand([{"hardware": "h100-sxm"}], {**CHAT, "tokens_per_s": 1e4}).demands[0]
    cap = serving_capacity(d, "h100-sxm")
    assert cap.check is not None and cap.check.source == "model, checked by simulation"
    assert cap.check.p99_tpot_s is not None and cap.check.p99_tpot_s <= d.tpot_limit_s * (1 + CHECK_TOLERANCE)
    assert cap.requests_per_s is not None
    assert cap.units_per_s == pytest.approx(cap.requests_per_s * d.output_len)


@pytest.mark.slow
def test_only_the_serving_capacities_that_can_matter_are_checked_by_simulation():
    d = demand(
        [{"hardware": "h100-sxm"}, {"hardware": "h20", "price_usd": 1e6}], {**CHAT, "tokens_per_s": 1e4}
    )
    alternatives = {a["candidate"]: a for a in fleet.plan(d).as_dict()["demands"][0]["alternatives"]}
    assert alternatives["h100-sxm"]["plan"]["capacity_from"] == "model, checked by simulation"
    assert (
        alternatives["h20"]["plan"]["capacity_from"] == "model"
    )  # dearer per unit by far more than the margin
    ratio = alternatives["h20"]["usd_per_million_tokens"] / alternatives["h100-sxm"]["usd_per_million_tokens"]
    assert ratio > 1 + fleet.CHECK_MARGIN


def test_a_region_picks_that_markets_catalog_price_or_says_which_regions_have_one():
    from tapeout.plan.demand import Candidate

    h200 = get_chip("h200-sxm")
    usd, source = price(Candidate(hardware="h200-sxm", region="CN"), h200, None)
    assert usd == 25000 and "2025-12, CN" in source
    with pytest.raises(TapeoutError, match="no catalog price in region 'US' \\(regions with a price: CN\\)"):
        price(Candidate(hardware="h200-sxm", region="US"), h200, None)
    with pytest.raises(TapeoutError, match=r"field 'candidates\.0\.region'"):
        parse_demand({"candidates": [{"hardware": "h20", "region": "China"}], "demands": []}, "d")


@pytest.mark.slow
def test_a_deadline_no_plan_meets_says_how_close_the_best_comes():
    run = {"kind": "training", "name": "rush", "model": "llama-3.1-8b", "tokens": 2e12, "seq_len": 4096,
           "global_batch": 64, "deadline_days": 1}  # fmt: skip
    with pytest.raises(TapeoutError, match=r"demand 'rush': .*needs [\d,]+ tokens/s.*reaches at best [\d,]+ "
                       r"tokens/s \(\d+ % of the need, dp \d+ on [\d,]+ chips, [\d,]+ days\)"):  # fmt: skip
        fleet.plan(demand([{"hardware": "h100-sxm"}], run))
