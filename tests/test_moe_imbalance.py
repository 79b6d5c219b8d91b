"""The busiest expert-parallel rank: the closed form against drawn routings (the naive reference),
and how it sizes the expert GEMMs and the exchanges of a sharded layer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tapeout.errors import TapeoutError
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.shard import shard
from tapeout.parallel.training import TrainingPlan
from tapeout.precision import BYTES_PER_ELEMENT, Numerics
from tapeout.workloads import transformer
from tapeout.workloads.models import get_model
from tapeout.workloads.moe import Routing, extreme
from tapeout.workloads.ops import AllToAll, Copy, Matmul

BF16 = Numerics.training("bf16")


def drawn(experts: int, k: int, local: int, tokens: int, skew: float, trials: int, seed: int) -> np.ndarray:
    """Rows per expert, drawn token by token: each token picks `k` distinct experts, with
    probability in proportion to a popularity of coefficient of variation `skew` (Gumbel top-k)."""
    rng = np.random.default_rng(seed)
    counts = np.empty((trials, experts))
    for t in range(trials):
        pop = np.clip(1 + skew * rng.standard_normal(experts), 1e-3, None)
        keys = np.log(pop / pop.sum()) - np.log(-np.log(rng.random((tokens, experts))))
        picks = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        counts[t] = np.bincount(picks.ravel(), minlength=experts)
    return counts


def busiest_drawn(experts: int, k: int, local: int, tokens: int, skew: float = 0.0) -> float:
    trials = int(min(2000, max(50, 4e6 // (tokens * experts))))
    counts = drawn(experts, k, local, tokens, skew, trials, seed=experts * 1000 + tokens)
    return float(counts.reshape(trials, experts // local, local).sum(axis=2).max(axis=1).mean())


@pytest.mark.parametrize(
    ("experts", "k", "local", "tokens", "skew", "tolerance"),
    [
        (32, 3, 4, 8192, 0.0, 0.01),  # MegaScale-MoE's layer: 8 ranks of 4 experts, 8 x 1024 tokens
        (128, 8, 16, 4096, 0.0, 0.01),  # Qwen3-30B-A3B over 8 ranks
        (8, 2, 1, 256, 0.0, 0.01),  # Mixtral, one expert a rank
        (256, 8, 32, 64, 0.0, 0.02),  # DeepSeek-V3 decode batches
        (256, 8, 32, 1, 0.0, 0.05),  # one token
        (256, 8, 1, 64, 0.0, 0.05),  # 256 ranks, two rows each on average
        (32, 3, 4, 8192, 0.3, 0.02),  # a skewed router
    ],
)
def test_the_closed_form_busiest_rank_matches_drawn_routings(experts, k, local, tokens, skew, tolerance):
    r = Routing(experts=experts, top_k=k, tokens=tokens, skew=skew)
    assert r.busiest(tokens, local) == pytest.approx(
        busiest_drawn(experts, k, local, tokens, skew), rel=tolerance
    )


def test_one_rank_holding_every_expert_gets_the_mean():
    r = Routing(experts=8, top_k=2, tokens=4096, skew=0.4)
    assert r.busiest(4096, 8) == r.mean(4096, 8) == 4096 * 2
    assert r.imbalance(4096, 8) == 1.0
    groups = round(8 * (1 - (1 - 2 / 8) ** 3))
    assert r.load(3, 8) == (groups, math.ceil(3 * 2 / groups))


def test_the_imbalance_shrinks_with_the_tokens_and_grows_with_the_ranks_and_the_skew():
    r = Routing(experts=64, top_k=4, tokens=1)
    by_tokens = [r.imbalance(n, 8) for n in (16, 256, 4096, 65536)]
    assert by_tokens == sorted(by_tokens, reverse=True) and by_tokens[-1] < 1.02
    by_ranks = [r.imbalance(4096, local) for local in (32, 16, 8, 4, 1)]  # 2 to 64 ranks
    assert by_ranks == sorted(by_ranks)
    skews = [Routing(experts=64, top_k=4, tokens=1, skew=s).imbalance(4096, 8) for s in (0, 0.1, 0.3)]
    assert skews == sorted(skews) and skews[0] < skews[1] < skews[2]


def test_the_multinomial_term_is_the_hypergeometric_variance_of_a_token():
    """Without skew and with many tokens the excess is sd x the extreme-value factor."""
    e, k, local, n = 32, 3, 4, 8192
    share = local / e
    sd = math.sqrt(n * k * share * (1 - share) * (e - k) / (e - 1))
    r = Routing(experts=e, top_k=k, tokens=n)
    excess = (r.busiest(n, local) - r.mean(n, local)) / sd
    assert excess == pytest.approx(extreme(e // local), rel=0.02)


def test_extreme_values_follow_blom_and_the_fixed_total():
    # Two ranks that share a fixed total: the maximum is mean + |X - mean|, sd sqrt(2 / pi) of it.
    assert extreme(2) == pytest.approx(math.sqrt(2 / math.pi), rel=0.05)
    assert extreme(1) == 0.0
    assert all(extreme(r) < math.sqrt(2 * math.log(r)) * math.sqrt(r / (r - 1)) for r in (4, 8, 64))


def test_a_capacity_factor_caps_the_busiest_rank_and_drops_the_overflow():
    dropless = Routing(experts=8, top_k=2, tokens=256)
    capped = Routing(experts=8, top_k=2, tokens=256, capacity_factor=1.1)
    mean = capped.mean(256, 1)
    assert dropless.busiest(256, 1) > 1.1 * mean
    assert capped.busiest(256, 1) == pytest.approx(1.1 * mean)
    assert dropless.dropped(256) == 0.0
    shares = [
        Routing(experts=8, top_k=2, tokens=256, capacity_factor=c).dropped(256) for c in (1.0, 1.25, 2.0)
    ]
    assert shares == sorted(shares, reverse=True) and shares[-1] < 1e-4
    # Against drawn routings: the copies beyond capacity over all the copies.
    counts = drawn(8, 2, 1, 256, 0.0, 2000, seed=7)
    over = np.clip(counts - 1.0 * 256 * 2 / 8, 0, None).sum(axis=1).mean() / (256 * 2)
    assert shares[0] == pytest.approx(over, rel=0.1)


@pytest.mark.parametrize(
    ("field", "kwargs"), [("skew", {"skew": -0.1}), ("capacity_factor", {"capacity_factor": 0.0})]
)
def test_bad_routing_names_the_field(field, kwargs):
    with pytest.raises(TapeoutError, match=f"field '{field}'"):
        Routing(experts=8, top_k=2, tokens=16, **kwargs)


def _op(graph, name):
    return next(n.op for n in graph.nodes if n.name == name)


def test_the_busiest_rank_sets_the_expert_rows_and_the_exchange_payload():
    """MegaScale-MoE's layer shape: 32 experts top-3, 8 expert-parallel ranks of 1024 tokens."""
    c = get_model("mixtral-8x7b").config.model_copy(
        update={"num_local_experts": 32, "num_experts_per_tok": 3}
    )
    plan = TrainingPlan(ep=8)
    g = shard(transformer.layer(c, 1024, BF16, moe=True), plan)
    r = Routing(experts=32, top_k=3, tokens=1024)
    busiest, mean = r.busiest(8192, 4), r.mean(8192, 4)
    assert busiest > mean == 1024 * 3
    up = _op(g, "experts.up")
    assert isinstance(up, Matmul) and up.groups == 4 and up.m == math.ceil(busiest / 4)
    dispatch, combine = _op(g, "ep.dispatch"), _op(g, "ep.combine")
    imbalance = r.imbalance(8192, 4)
    assert imbalance == pytest.approx(busiest / mean, abs=1 / 1024)
    h = c.hidden_size
    assert (
        isinstance(dispatch, AllToAll)
        and dispatch.bytes_per_rank == 1024 * 3 * h * BYTES_PER_ELEMENT[BF16.dispatch] * imbalance
    )
    assert (
        isinstance(combine, AllToAll)
        and combine.bytes_per_rank == 1024 * 3 * h * BYTES_PER_ELEMENT[BF16.stream] * imbalance
    )
    sort = _op(g, "ep.dispatch.sort")
    assert isinstance(sort, Copy) and sort.size_bytes == dispatch.bytes_per_rank
    # The token permutation on the sending side sorts the rank's own tokens: the mean.
    assert _op(g, "moe.permute").size_bytes == 1024 * 3 * h * BYTES_PER_ELEMENT[BF16.stream]


def test_without_expert_parallelism_the_experts_run_the_mean():
    c = get_model("mixtral-8x7b").config
    g = shard(transformer.layer(c, 4096, BF16, moe=True), TrainingPlan(tp=2))
    up = _op(g, "experts.up")
    assert isinstance(up, Matmul) and (up.groups, up.m) == (8, 4096 * 2 // 8)
    assert not any(isinstance(n.op, AllToAll) for n in g.nodes)


@pytest.mark.parametrize("plan", [TrainingPlan(ep=8), InferencePlan(tp=2, ep=8), InferencePlan(tp=1, ep=16)])
@pytest.mark.parametrize("tokens", [1, 5, 333, 8192])
def test_a_template_instantiates_to_the_busiest_rank_of_the_lowered_layer(plan, tokens):
    """Serving scales one sharded template to every token count; the busiest rank's rows and
    payload must come out, bit for bit, as lowering the layer at that count does."""
    c, num = get_model("deepseek-v3").config, BF16
    template = shard(transformer.layer_template(c, num, True).ops(), plan).at(tokens=tokens)
    direct = shard(transformer.layer(c, tokens, num, moe=True).ops(), plan)
    assert [n.op for n in template.nodes] == [n.op for n in direct.nodes]
    assert any(isinstance(n.op, AllToAll) for n in direct.nodes)
