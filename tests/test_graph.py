"""The op graph, its lowering and its sharding: the single source of FLOPs, of collectives, and of
the tensors memory is sized from."""

import dataclasses
import typing

import pytest
from typer.testing import CliRunner

from tapeout.cases import LlmInferenceParams, LlmTrainingParams
from tapeout.cli import app
from tapeout.errors import TapeoutError
from tapeout.parallel.fields import as_dict, plan_fields
from tapeout.parallel.inference import InferencePlan
from tapeout.parallel.shard import Layout, shard
from tapeout.parallel.training import TrainingPlan
from tapeout.precision import Numerics
from tapeout.search.training import PINNABLE
from tapeout.workloads import autodiff, transformer
from tapeout.workloads.graph import Graph, Node, Phase, Role
from tapeout.workloads.models import get_model, resolve_model
from tapeout.workloads.ops import AllGather, AllReduce, AllToAll, Matmul, OpKind, ReduceScatter
from tapeout.workloads.transformer import _qk_dim, _v_dim

BF16 = Numerics.training("bf16")
LLAMA70 = get_model("llama-3.1-70b").config


@pytest.mark.parametrize("model_id", ["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "deepseek-v3"])
def test_the_graph_counts_two_flops_per_active_parameter_and_token_plus_attention(model_id):
    """A forward pass of one 2,048-token sequence: matmul FLOPs within 1 % of 2 x active
    parameters (embeddings aside) x tokens, and attention as FlashAttention counts it."""
    c, s = get_model(model_id).config, 2048
    g = transformer.forward(c, batch=1, seq_len=s, numerics=BF16)
    active = c.active_param_count() - c.embedding_params() + (c.vocab_size * c.hidden_size if c.tied else 0)
    assert g.matmul_flops() == pytest.approx(2 * active * s, rel=0.01)
    attention = sum(n.flops for n in g.nodes if n.op.kind == OpKind.ATTENTION)
    flash = 4 * s * s * c.num_attention_heads * (_qk_dim(c) + _v_dim(c)) / 2 / 2 * c.num_hidden_layers
    assert attention == pytest.approx(flash, rel=0.01)


def test_tensor_parallel_splits_the_matmuls_eight_ways_and_adds_the_all_reduces():
    g = transformer.layer(LLAMA70, 4096, BF16, moe=False)
    one = shard(g, TrainingPlan(tp=8))
    assert one.matmul_flops() == pytest.approx(g.matmul_flops() / 8)
    size = 4096 * LLAMA70.hidden_size * 2
    assert [(type(n.op), n.op.ranks, n.op.bytes_per_rank) for n in one.communication().nodes] == [
        (AllReduce, 8, size), (AllReduce, 8, size)]  # fmt: skip
    sp = shard(g, TrainingPlan(tp=8, sequence_parallel=True))
    assert [type(n.op) for n in sp.communication().nodes] == [
        AllGather,
        ReduceScatter,
        AllGather,
        ReduceScatter,
    ]
    assert sp.matmul_flops() == one.matmul_flops()
    # The backward's collectives are the conjugates: the same bytes the other way.
    back = shard(autodiff.backward(g), TrainingPlan(tp=8, sequence_parallel=True)).communication()
    assert sorted(type(n.op).__name__ for n in back.nodes) == ["AllGather"] * 2 + ["ReduceScatter"] * 2
    assert shard(autodiff.backward(g), TrainingPlan(tp=8)).matmul_flops() == pytest.approx(
        2 * one.matmul_flops()
    )


def test_key_value_heads_are_kept_whole_on_every_rank():
    g = transformer.layer(get_model("llama-2-70b").config, 16, BF16, moe=False)  # 8 key/value heads
    qkv = next(n.op for n in shard(g, Layout(tp=16)).nodes if n.name == "qkv")
    assert isinstance(qkv, Matmul) and qkv.n == (64 // 16 + 2 * 1) * 128


def test_the_graph_is_frozen_hashable_and_prints():
    g = transformer.layer(get_model("llama-3.1-8b").config, 128, BF16, moe=False)
    assert hash(g) == hash(transformer.layer(get_model("llama-3.1-8b").config, 128, BF16, moe=False))
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes = ()  # type: ignore[misc]
    table = g.table()
    assert "qkv" in table and "live weight attention" in table
    assert (3 * g).flops == pytest.approx(3 * g.flops)
    assert g.select(Phase.BACKWARD).nodes == ()
    assert len(g.compute().nodes) + len(g.communication().nodes) == len(g.nodes)


@pytest.mark.parametrize(("model_id", "plan"), [("llama-2-70b", InferencePlan(tp=4)),
                                                ("mixtral-8x7b", InferencePlan(tp=2, ep=8)),
                                                ("deepseek-v3", InferencePlan(tp=1, ep=8, precision="fp8"))])  # fmt: skip
@pytest.mark.parametrize("tokens", [1, 7, 300, 4096])
def test_a_sharded_template_instantiates_to_the_sharded_graph(model_id, plan, tokens):
    """What serving does: lower once at one token, shard once, instantiate per token count."""
    c, num = get_model(model_id).config, plan.numerics
    for moe, _ in transformer.census(c):
        direct = shard(transformer.layer(c, tokens, num, moe=moe).ops(), plan)
        template = shard(transformer.layer_template(c, num, moe).ops(), plan).at(tokens=tokens)
        assert [n.op for n in template.nodes] == [n.op for n in direct.nodes]


def test_experts_beyond_tp_exchange_tokens_and_see_every_group():
    c, plan = get_model("deepseek-v3").config, InferencePlan(tp=1, ep=8, precision="fp8")
    g = shard(transformer.layer(c, 64, plan.numerics, moe=True), plan)
    a2a = [n.op for n in g.nodes if isinstance(n.op, AllToAll)]
    assert len(a2a) == 2 and all(op.ranks == 8 for op in a2a)
    up = next(n.op for n in g.nodes if n.name == "experts.up")
    # 64 tokens from each of 8 attention groups, 8 of 256 experts each: 16 of the 32 local experts
    # receive some, expected ones - 1 - (1 - 8 / 256) ** 512 of them.
    assert isinstance(up, Matmul) and up.groups == round(32 * (1 - (1 - 8 / 256) ** 512))
    assert up.m * up.groups >= 64 * 8 * 8 * 32 / 256


def test_live_tensors_size_the_kv_cache_and_the_activations():
    c = get_model("llama-3.1-8b").config
    g = shard(transformer.layer(c, 1024, BF16, moe=False), TrainingPlan(tp=2, sequence_parallel=True))
    assert g.bytes_of(Role.KV_CACHE) == (8 // 2) * 2 * 128 * 2
    assert g.bytes_of(Role.INPUT) == 1024 * c.hidden_size * 2 / 2


def test_a_model_the_lowering_does_not_cover_says_which_part():
    windowed = resolve_model({"base": "llama-2-7b", "sliding_window": 4096, "max_position_embeddings": 32768})
    with pytest.raises(TapeoutError, match=r"sliding-window attention .* in layer 0 is not lowered"):
        transformer.census(windowed)


def test_a_plan_field_is_one_edit_everywhere():
    """The CLI flags, the validation case params, the search's pins and the JSON come from the plans'
    fields."""
    helps = {cmd: CliRunner().invoke(app, [cmd, "--help"]).output for cmd in ("train", "serve", "recsys")}
    for f in dataclasses.fields(TrainingPlan):
        assert "--" + f.name.replace("_", "-") in helps["train"]
    for f in dataclasses.fields(InferencePlan):
        assert "--" + f.name.replace("_", "-") in helps["serve"]
    assert set(PINNABLE) == {f.name for f in plan_fields(TrainingPlan, searched=True)}
    assert {f.name for f in plan_fields(TrainingPlan, case=True)} <= set(
        typing.get_type_hints(LlmTrainingParams)
    )
    assert {f.name for f in plan_fields(InferencePlan, case=True)} <= set(
        typing.get_type_hints(LlmInferenceParams)
    )
    assert set(as_dict(TrainingPlan())) == {f.name for f in dataclasses.fields(TrainingPlan)}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: InferencePlan(precision="fp32"),
            "field 'precision': unknown precision 'fp32'; known: bf16, fp16, fp8",
        ),
        (lambda: TrainingPlan(precision="fp4"), "field 'precision': unknown precision 'fp4'; known: bf16"),
        (lambda: InferencePlan(kv_precision="fp6"), "field 'kv_precision': unknown precision 'fp6'"),
    ],
)
def test_a_format_a_workload_cannot_take_is_refused_when_the_plan_is_built(build, message):
    with pytest.raises(TapeoutError, match=message):
        build()


def test_graph_node_defaults_and_dims():
    g = Graph((Node(Matmul(m=1, n=8, k=8), dims=(("m", ("tokens",)),)),))
    assert g.at(tokens=3).nodes[0].op.m == 3 and g.at(batch=5).nodes[0].op.m == 1
