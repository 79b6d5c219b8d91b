"""Tensor-parallel sharding of captured programs: the placement pass against the analytic layer
sharded the same way (`workloads.transformer` + `parallel.shard` + `perf.rules.graph_cost`)."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tapeout.compiler import Program, compile  # noqa: E402
from tapeout.compiler.build import numerics_for, system_of  # noqa: E402
from tapeout.compiler.hf import causal_lm, token_ids  # noqa: E402
from tapeout.errors import TapeoutError  # noqa: E402
from tapeout.hardware import get_chip  # noqa: E402
from tapeout.parallel.shard import Layout, shard  # noqa: E402
from tapeout.perf.rules import graph_cost  # noqa: E402
from tapeout.workloads import transformer  # noqa: E402
from tapeout.workloads.graph import Split  # noqa: E402
from tapeout.workloads.llm import LLMConfig  # noqa: E402
from tapeout.workloads.ops import AllGather, AllReduce, ReduceScatter  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecations

TARGET = "tapeout-i1"
LLAMA = LLMConfig(architecture="llama", hidden_size=1024, intermediate_size=4096, num_hidden_layers=2,
                  num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)  # fmt: skip
MIXTRAL = LLMConfig(architecture="mixtral", hidden_size=1024, intermediate_size=2048, num_hidden_layers=2,
                    num_attention_heads=16, num_key_value_heads=4, vocab_size=32000, num_local_experts=8,
                    num_experts_per_tok=2)  # fmt: skip


@pytest.fixture(scope="module")
def llama():
    return compile(causal_lm(LLAMA), (token_ids(LLAMA, 2, 512),), target=TARGET)


@pytest.fixture(scope="module")
def mixtral():
    # 4,096 tokens: the router's dozen small whole kernels (softmax, top-k, sort, histogram), which
    # the analytic layer does not count and no split shortens, stay a small share of a chip's time.
    return compile(causal_lm(MIXTRAL), (token_ids(MIXTRAL, 8, 512),), target=TARGET)


def analytic(config, batch, seq, layout):
    """The analytic forward of the same config and shapes, sharded by `layout`, on the chips of
    one tensor-parallel group."""
    numerics = numerics_for(get_chip(TARGET), "bf16", training=False)
    graph = transformer.forward(config, batch=batch, seq_len=seq, numerics=numerics)
    system, _ = system_of(get_chip(TARGET), None, False, chips=layout.tp)
    return graph_cost(shard(graph, layout), system)


def combined(program, marker):
    """The steps whose values the `marker` steps combine."""
    by_name = {s.name: s for s in program.steps}
    return [by_name[s.name.removeprefix(f"{marker}.")] for s in program.steps if s.target == marker]


def test_captured_llama_splits_like_megatron(llama):
    program = llama.program()
    whole, one = program.graph(), shard(program.graph(), Layout(tp=4))
    assert one.matmul_flops() == pytest.approx(whole.matmul_flops() / 4, rel=0.01)
    reduced = combined(program, "tp.reduce")
    rows = [s for s in reduced if s.split == (Split("tp", "k"),)]
    assert len(rows) == 2 * LLAMA.num_hidden_layers  # attention out and MLP down, per layer
    assert [s.target for s in reduced if s not in rows] == ["aten.embedding"]  # vocabulary-parallel
    assert sum(isinstance(n.op, AllReduce) for n in one.communication().nodes) == len(reduced)
    qkv = [s for s in program.kernels() if s.split and s.split[0].packed]
    assert [s.split for s in qkv] == [(Split("tp", "n", (16, 4, 4)),)] * LLAMA.num_hidden_layers
    attention = [s for s in program.kernels() if s.kind == "attention"]
    assert all(s.split == (Split("tp", "heads"),) for s in attention)
    assert not program.unplaced()


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_captured_llama_per_chip_time_matches_the_analytic_layer(llama, tp):
    """Within 10 % (1.000 at tp 2, 1.005 at 4, 1.010 at 8 when written; docs/compiler.md)."""
    estimate = llama.estimate(tp=tp)
    expected = analytic(LLAMA, 2, 512, Layout(tp=tp))
    assert estimate.time_s == pytest.approx(expected.time_s, rel=0.10)
    assert estimate.flops == pytest.approx(expected.flops, rel=0.01)
    assert estimate.tp == tp and estimate.communication_s > 0 and estimate.unplaced == 0
    assert estimate.time_s < llama.estimate().time_s


def test_sequence_parallel_turns_the_markers_into_reduce_scatters_and_gathers(llama):
    program = llama.program()
    one = program.sharded(4, sequence_parallel=True)
    kinds = [type(n.op) for n in one.communication().nodes]
    layers = LLAMA.num_hidden_layers
    assert kinds.count(ReduceScatter) == 1 + 2 * layers  # the embedding's, attention's and MLP's
    assert kinds.count(AllGather) == 2 * layers + 1  # before attention, the MLP and the head
    norms = [n for n in one.nodes if n.op.kind.value == "reduce" and n.split == (Split("sp", "rows"),)]
    assert norms and all(n.op.rows == 2 * 512 // 4 for n in norms)
    estimate = llama.estimate(tp=4, sequence_parallel=True)
    expected = analytic(LLAMA, 2, 512, Layout(tp=4, sequence_parallel=True))
    assert estimate.time_s == pytest.approx(expected.time_s, rel=0.10)


def test_captured_mixtral_splits_its_experts_and_lists_the_router(mixtral):
    program = mixtral.program()
    layout = Layout(tp=4, etp=4)
    one = shard(program.graph(), layout)
    assert one.matmul_flops() == pytest.approx(program.graph().matmul_flops() / 4, rel=0.01)
    experts = combined(program, "moe.reduce")
    assert len(experts) == MIXTRAL.num_hidden_layers  # after the weighted sum of each token's experts
    attention_out = [s for s in combined(program, "tp.reduce") if s.split == (Split("tp", "k"),)]
    assert len(attention_out) == MIXTRAL.num_hidden_layers
    grouped = [s for s in program.kernels() if s.target == "transformers.grouped_mm_fallback"]
    assert {s.split for s in grouped} == {(Split("etp", "n"),), (Split("etp", "k"),)}
    routers = program.unplaced()  # Megatron keeps the router whole: its softmax needs every expert
    assert len(routers) == MIXTRAL.num_hidden_layers and all("softmax" in s.unplaced for s in routers)
    estimate = mixtral.estimate(tp=4)
    assert estimate.unplaced == MIXTRAL.num_hidden_layers
    assert estimate.time_s == pytest.approx(analytic(MIXTRAL, 8, 512, layout).time_s, rel=0.10)


def test_an_mlp_is_column_then_row_parallel_and_returns_whole_sums():
    mlp = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
    program = compile(mlp, (torch.randn(64, 256),), target=TARGET).program()
    assert [s.split for s in program.kernels()] == [(Split("tp", "n"),), (Split("tp", "k"),)]
    (reduce,) = program.sharded(4).communication().nodes  # after the last product: the output
    assert isinstance(reduce.op, AllReduce) and reduce.op.ranks == 4
    assert reduce.op.bytes_per_rank == 64 * 256 * 2  # the output, in bf16
    assert program.steps[-1].name == "tp.reduce.linear_1"


class Crossed(torch.nn.Module):
    """Two column-parallel products whose outputs meet split on different dims."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

    def forward(self, x):
        return self.a(x) + self.b(x).t()


class Spectral(torch.nn.Module):
    """A product whose output feeds an op no rule places (a Fourier transform, run on the host)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 256)

    def forward(self, x):
        return torch.fft.rfft(self.fc(x)).abs()


def test_ops_the_rules_cannot_place_stay_whole_and_are_listed():
    compiled = compile(Crossed(), (torch.randn(64, 64),), target=TARGET)
    (add,) = compiled.program().unplaced()
    assert add.target == "aten.add" and "do not line up" in add.unplaced
    assert compiled.estimate(tp=2).unplaced == 1
    gathers = [n.op for n in compiled.program().sharded(2).communication().nodes if n.name == "tp.allgather"]
    assert gathers and all(g.ranks == 2 for g in gathers)  # its split inputs are gathered, and costed
    assert "whole on every chip under tensor parallelism (1)" in compiled.report()
    assert add.name in compiled.report()
    spectral = compile(Spectral(), (torch.randn(8, 64),), target=TARGET).program()
    (linear,) = spectral.unplaced()
    assert linear.target == "aten.linear" and "_fft_r2c" in linear.unplaced
    one = spectral.sharded(4)
    assert one.matmul_flops() == spectral.graph().matmul_flops()  # computed whole on every chip


def test_splits_and_markers_save_and_load(llama, tmp_path):
    program = llama.program()
    path = tmp_path / "llama.json"
    program.save(path)
    again = Program.load(path)
    assert again == program
    assert again.sharded(4) == program.sharded(4)
    # A file written before placement existed (no splits, no markers) loads and shards whole.
    data = json.loads(path.read_text())
    data["steps"] = [{k: v for k, v in s.items() if k not in ("split", "unplaced")} for s in data["steps"]
                     if s["bound"] != "marker"]  # fmt: skip
    path.write_text(json.dumps(data))
    old = Program.load(path)
    assert old.sharded(4).matmul_flops() == program.graph().matmul_flops()
    assert not old.sharded(4).communication().nodes


def test_bad_tensor_parallel_widths_are_refused_by_name(llama):
    with pytest.raises(TapeoutError, match=r"field 'tp': 3 does not divide the 16 attention heads"):
        llama.estimate(tp=3)
    with pytest.raises(TapeoutError, match="field 'tp'"):
        llama.program().sharded(0)


def test_compile_command_times_one_chip_of_a_tensor_parallel_group(capsys):
    from tapeout.cli.compile import compile_command

    compile_command(None, model="llama-3.1-8b", layers=1, seq=64, tp=4, as_json=True)
    estimate = json.loads(capsys.readouterr().out)["estimate"]
    assert estimate["tp"] == 4 and estimate["communication_s"] > 0
    compile_command(None, model="llama-3.1-8b", layers=1, seq=64, tp=1, as_json=True)
    whole = json.loads(capsys.readouterr().out)["estimate"]
    assert estimate["flops"] == pytest.approx(whole["flops"] / 4, rel=0.02)


@pytest.mark.parametrize("name", ["tapeout.compiler.splits", "tapeout.compiler.program"])
def test_docstring_examples_of_the_placement(name):
    """The compiler's modules import torch, so the package-wide doctest run leaves them out."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
