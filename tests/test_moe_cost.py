"""The experts' 8-bit cast of the routed copies: present where the dispatcher delivers the
copies wider than the expert matmuls read them, sized by the routed rows, forward only (the
backward's gradient cast is one a dense layer has too), and absent otherwise."""

from __future__ import annotations

from tapeout.parallel.shard import Layout, shard
from tapeout.precision import Numerics
from tapeout.workloads import autodiff
from tapeout.workloads.graph import Graph
from tapeout.workloads.models import get_model
from tapeout.workloads.ops import Elementwise, Matmul
from tapeout.workloads.transformer import layer

MODEL = get_model("mixtral-8x7b").config
TOKENS = 4096


def _casts(g: Graph) -> list[Elementwise]:
    return [n.op for n in g.nodes if isinstance(n.op, Elementwise) and n.op.name == "experts.cast"]


def _up(g: Graph) -> Matmul:
    return next(n.op for n in g.nodes if isinstance(n.op, Matmul) and n.op.name == "experts.up")


def test_fp8_training_casts_every_routed_copy_in_the_forward() -> None:
    fwd = layer(MODEL, TOKENS, Numerics.training("fp8"), moe=True)
    (cast,) = _casts(fwd)
    up = _up(fwd)
    assert cast.elements == up.groups * up.m * MODEL.hidden_size
    assert up.groups * up.m == TOKENS * (MODEL.num_experts_per_tok or 1)
    assert cast.bytes == cast.elements * (2 + 2)  # a 16-bit read, two 8-bit writes
    assert not _casts(autodiff.backward(fwd))


def test_no_cast_when_the_copies_arrive_in_the_matmuls_format() -> None:
    assert not _casts(layer(MODEL, TOKENS, Numerics.training("bf16"), moe=True))
    serving = Numerics.serving(weights="fp8", activations="fp8", kv="fp8")
    assert not _casts(layer(MODEL, TOKENS, serving, moe=True))
    assert not _casts(layer(MODEL, TOKENS, Numerics.training("fp8"), moe=False))


def test_cast_follows_the_busiest_expert_parallel_rank() -> None:
    fwd = layer(MODEL, TOKENS, Numerics.training("fp8"), moe=True)
    one = shard(fwd, Layout(ep=8, exchange=True, token_groups=8))
    (cast,) = _casts(one)
    up = _up(one)
    assert cast.elements == up.groups * up.m * MODEL.hidden_size
