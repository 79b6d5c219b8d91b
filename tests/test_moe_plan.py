"""Routing statistics a run states: the router's skew and the experts' capacity, as plan fields of
training and serving, down to the busiest expert-parallel rank."""

from __future__ import annotations

import pytest

from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.training import TrainingPlan
from tapeout.perf.system import System
from tapeout.sim.llm import Batch, Replica
from tapeout.sim.train import train_step
from tapeout.workloads.models import get_model

MIXTRAL = get_model("mixtral-8x7b").config
LLAMA = get_model("llama-3.1-8b").config
H100 = get_chip("h100-sxm")


def step(model, **plan):
    base = {"tp": 2, "ep": 8, "zero": 1, "recompute": "full"} if model is MIXTRAL else {"zero": 1}
    return train_step(model, System.of(H100, 64), TrainingPlan(**{**base, **plan}), seq_len=4096,
                      global_batch=256, check_memory=False)  # fmt: skip


def test_a_skewed_router_slows_the_experts_and_nothing_else():
    assert step(MIXTRAL, router_skew=0.3).step_time_s > 1.1 * step(MIXTRAL).step_time_s
    assert step(LLAMA, router_skew=0.3).step_time_s == step(LLAMA).step_time_s


def test_a_capacity_caps_the_busiest_rank_and_says_what_it_drops():
    skewed = step(MIXTRAL, router_skew=0.3)
    capped = step(MIXTRAL, router_skew=0.3, capacity_factor=1.25)
    assert capped.step_time_s < skewed.step_time_s
    assert 0 < capped.moe_dropped < 0.2 and skewed.moe_dropped == 0.0
    assert capped.as_dict()["moe_dropped_share"] == capped.moe_dropped


def test_serving_decode_waits_for_the_busiest_rank():
    def decode(**plan):
        rep = Replica.of(MIXTRAL, System.of(H100, 8), InferencePlan(ep=8, precision="fp8", **plan))
        return rep.step_time(Batch(decode_seqs=64, decode_context=64 * 1024))

    assert decode(router_skew=0.5) > decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("router_skew", -0.1, "field 'router_skew': must be a finite number >= 0 and <= 3"),
        ("router_skew", float("nan"), "field 'router_skew'"),
        ("capacity_factor", 0.0, "field 'capacity_factor': must be a finite number > 0 and <= 64"),
        ("capacity_factor", 1000.0, "field 'capacity_factor'"),
    ],
)
def test_bad_routing_statistics_are_refused(field, value, message):
    for plan in (TrainingPlan, InferencePlan):
        with pytest.raises(TapeoutError, match=message):
            plan(**{field: value})
