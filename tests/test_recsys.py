import json
import math

import pytest
from typer.testing import CliRunner

from tapeout.api import recsys as recsys_api
from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.parallel.recsys import RecsysPlan, place
from tapeout.parallel.shard import shard
from tapeout.perf.rules import graph_cost
from tapeout.perf.system import System
from tapeout.search.recsys import server
from tapeout.sim import recsys
from tapeout.workloads import autodiff, dlrm
from tapeout.workloads.models import get_model, resolve_model
from tapeout.workloads.ops import Gather
from tapeout.workloads.recsys import EmbeddingTable, Interaction, RecsysConfig

DLRM = get_model("dlrm-v2").config


def test_uniform_tables_cache_the_densest_first():
    small, big = EmbeddingTable(rows=1000, dim=8, pooling=10), EmbeddingTable(rows=10**6, dim=8, pooling=10)
    assert dlrm.hit_rates([small, big], 1000) == [1.0, 0.0]
    assert dlrm.hit_rates([small, big], 0) == [0.0, 0.0]


def test_skewed_tables_hit_more_than_their_row_share():
    skewed = EmbeddingTable(rows=10**6, dim=8, pooling=1, skew_alpha=1.0)
    flat = EmbeddingTable(rows=10**6, dim=8, pooling=1)
    assert dlrm.hit_rates([skewed], 10**4)[0] > 0.5  # Zipf(1): the top 1 % of rows take most lookups
    assert dlrm.hit_rates([flat], 10**4)[0] == pytest.approx(0.01, rel=0.05)


def test_gather_bytes_round_rows_up_to_granules():
    from tapeout.perf.rules import op_cost

    sys = System.of(get_chip("h100-sxm"))  # 32-byte sectors
    g = op_cost(Gather(lookups=1000, dim=25, rows=10**6, outputs=0, precision="int8"), sys)
    assert g.dram_bytes == 1000 * 32
    cached = op_cost(Gather(lookups=1000, dim=25, rows=10**6, outputs=0, precision="int8", cached=0.75), sys)
    assert cached.dram_bytes == 250 * 32


def test_sharding_planner_balances_and_splits():
    plan = place(DLRM, 64, 10e9, "fp16", "table")
    assert all(sum(o.values()) == pytest.approx(1.0) for o in plan.owners)
    work = [0.0] * 64
    for t, owners in zip(DLRM.tables, plan.owners, strict=True):
        for c, share in owners.items():
            work[c] += t.pooling * t.dim * share
    assert max(work) < 2.5 * sum(work) / 64  # the pooling-100 table is split, not left on one chip


def test_tables_that_cannot_fit_say_so():
    with pytest.raises(TapeoutError, match=r"the tables take 104\.\d GB; 2 chips hold 20\.0 GB"):
        place(DLRM, 2, 10e9, "fp32", "table")
    with pytest.raises(TapeoutError, match="sharding 'data': the tables take"):
        place(DLRM, 8, 10e9, "int8", "data")
    with pytest.raises(TapeoutError, match="field 'sharding': 'diagonal'; known: auto, data, table"):
        place(DLRM, 8, 10e9, "int8", "diagonal")  # type: ignore[arg-type]
    with pytest.raises(TapeoutError, match="field 'sharding': 'diagonal'; known: auto, data, table"):
        RecsysPlan(sharding="diagonal")  # type: ignore[arg-type]


def test_bad_recsys_configs_are_named():
    base = {"architecture": "dlrm", "dense_features": 4, "bottom_mlp": [8], "top_mlp": [1],
            "tables": [{"rows": 10, "dim": 8}], "interaction": {"kind": "dot"}}  # fmt: skip
    assert resolve_model(base, "t", None).param_count() > 0
    bad = json.loads(json.dumps(base))
    bad["interaction"]["kind"] = "cross"
    with pytest.raises(TapeoutError, match=r"dot.*dcn.*transformer"):
        resolve_model(bad, "t", None)
    bad = json.loads(json.dumps(base))
    bad["tables"][0]["skew_alpha"] = 5
    with pytest.raises(TapeoutError, match="skew_alpha"):
        resolve_model(bad, "t", None)


def test_inference_batches_and_server_mode():
    rs = recsys.RecsysSystem.of(DLRM, System.of(get_chip("h100-sxm"), 8), RecsysPlan(precision="int8"))
    small = recsys.offline(rs, pairs_per_sample=270, batch_pairs=4096)
    big = recsys.offline(rs, pairs_per_sample=270)
    assert big.samples_per_s > small.samples_per_s
    assert big.pairs_per_s == pytest.approx(270 * big.samples_per_s)
    served = server(rs, latency_limit_s=0.01, pairs_per_sample=270, samples=4000)
    assert served.p99_latency_s is not None and served.p99_latency_s <= 0.01
    assert 0 < served.samples_per_s <= big.samples_per_s


def test_distinct_rows_match_the_occupancy_sum():
    flat = EmbeddingTable(rows=1000, dim=8)
    assert dlrm.distinct_rows(flat, 500) == pytest.approx(1000 * (1 - math.exp(-0.5)))
    skewed = EmbeddingTable(rows=10**4, dim=8, skew_alpha=1.0)
    h = sum(i**-1.0 for i in range(1, 10**4 + 1))
    naive = sum(1 - math.exp(-3000 * i**-1.0 / h) for i in range(1, 10**4 + 1))  # every row, one by one
    assert dlrm.distinct_rows(skewed, 3000) == pytest.approx(naive, rel=0.02)
    assert dlrm.distinct_rows(skewed, 3000) < dlrm.distinct_rows(EmbeddingTable(rows=10**4, dim=8), 3000)


def test_training_backward_rewrites_each_distinct_row_and_its_accumulator():
    table = EmbeddingTable(rows=10**6, dim=128, pooling=4)
    model = RecsysConfig(dense_features=13, tables=(table,), bottom_mlp=(128,), interaction=Interaction(kind="dot"),
                         top_mlp=(1,))  # fmt: skip
    sys = System.of(get_chip("h100-sxm"))
    rs = recsys.RecsysSystem.of(model, sys, RecsysPlan(precision="fp16"), training=True)
    assert rs.embedding_precision == "fp32"  # fp32 master rows under mixed precision
    lookups, distinct = 4000, dlrm.distinct_rows(table, 4000)
    tables = dlrm.tables(model, 1000, rs.embedding_precision, "fp16", training=True)
    cost = graph_cost(shard(autodiff.backward(tables), rs.placement.layout(0, rs.hits)), sys)
    # fp16 bag gradient per lookup; fp32 row and fp32 Adagrad accumulator read and written once per distinct row
    assert cost.dram_bytes == pytest.approx(lookups * 128 * 2 + distinct * 2 * 2 * 128 * 4)


def test_training_carries_its_share_of_the_evaluation():
    sys = System.of(get_chip("h100-sxm"), 8)
    with_eval = recsys.train_step(
        recsys.RecsysSystem.of(DLRM, sys, RecsysPlan(precision="fp16"), training=True), 55296
    )
    bare = DLRM.model_copy(update={"evaluation": None})
    without = recsys.train_step(
        recsys.RecsysSystem.of(bare, sys, RecsysPlan(precision="fp16"), training=True), 55296
    )
    assert without.breakdown_s["evaluation"] == 0
    assert with_eval.step_time_s == pytest.approx(without.step_time_s + with_eval.breakdown_s["evaluation"])
    assert DLRM.evaluation is not None  # forward passes cost less than a third of a step per sample
    ratio = DLRM.evaluation.samples / DLRM.evaluation.every_samples
    assert 0 < with_eval.breakdown_s["evaluation"] < ratio * without.step_time_s / 2


def test_training_step_has_all_to_all_when_sharded():
    rs = recsys.RecsysSystem.of(
        DLRM, System.of(get_chip("h100-sxm"), 8), RecsysPlan(precision="fp16"), training=True
    )
    r = recsys.train_step(rs, 55296)
    assert rs.placement.kind == "table" and r.breakdown_s["all_to_all"] > 0
    assert r.samples_per_s == pytest.approx(55296 / r.step_time_s)


def test_api_and_cli():
    out = recsys_api("dlrm-v2", "h100-sxm", 8, pairs_per_sample=270, latency_limit_s=0.06)
    assert out.mode == "server" and out.result.samples_per_s > 0 and out.as_dict()["samples_per_s"] > 0
    with pytest.raises(TapeoutError, match="training needs the global batch"):
        recsys_api("dlrm-v2", "h100-sxm", 8, training=True)
    res = CliRunner().invoke(app, ["recsys", "dlrm-v2", "--hardware", "h200-sxm", "--chips", "8", "--batch", "55296",
                                   "--train", "--precision", "fp16", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["mode"] == "training"
