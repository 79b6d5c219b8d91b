"""The backward of a forward graph, derived in one place (as JAX derives a jaxpr's transpose):
serving reads forward graphs, training the forward with this backward and, when it recomputes,
the forward again.

Rules, per op of the forward, in reverse order:
- a matmul C = A B (m x n x k) gives the input gradient dA = dC B^T (m x k x n) and the
  weight (second operand) gradient dB = A^T dC (k x n x m). A split moves with the dims: a
  column-parallel product (n split) has a row-parallel input gradient (k split, partial sums)
  and a column-parallel weight gradient; a row-parallel one (k split) the reverse;
- fused attention gives its backward kernel (FlashAttention-2's, recomputing the scores);
- a pointwise op or a row reduction reads its saved input and the incoming gradient and writes
  the gradient: twice its forward traffic; an embedding lookup scatters the gradients back onto
  the same rows. A node's own `grad` ops override these (a softmax's gradient);
- collectives are Megatron's conjugate pairs: where the forward gathers the stream (identity,
  or all-gather under sequence parallelism) the backward reduces the gradients (all-reduce, or
  reduce-scatter), and the reverse; token exchanges between expert ranks run again the other way.
"""

from __future__ import annotations

from dataclasses import replace

from tapeout.precision import Precision
from tapeout.workloads.graph import Graph, Node, Phase, Split
from tapeout.workloads.ops import AllGather, AllReduce, Attention, Elementwise, Matmul, Op, OpKind

# Where each matmul dim lands in the input and the weight gradient.
_DGRAD = {"m": "m", "n": "k", "k": "n", "groups": "groups"}
_WGRAD = {"m": "k", "n": "n", "k": "m", "groups": "groups"}


def _moved(split: tuple[Split, ...], where: dict[str, str]) -> tuple[Split, ...]:
    return tuple(replace(s, dim=where.get(s.dim, s.dim)) for s in split)


def _node_backward(node: Node, phase: Phase) -> list[Node]:
    op = node.op

    def same(o: Op, split: tuple[Split, ...] = node.split) -> Node:
        return Node(o, count=node.count, phase=phase, split=split, routed=node.routed)

    if node.grad is not None:
        return [same(o) for o in node.grad]
    if isinstance(op, Matmul):
        dgrad = replace(op, n=op.k, k=op.n, weight_precision=None, name=f"{op.name}.dgrad")
        wgrad = replace(op, m=op.k, k=op.m, weight_precision=None, name=f"{op.name}.wgrad")
        return [same(dgrad, _moved(node.split, _DGRAD)), same(wgrad, _moved(node.split, _WGRAD))]
    if isinstance(op, Attention):
        return [same(replace(op, backward=True, name=f"{op.name}.grad"))]
    if isinstance(op, AllGather):  # gather marker: its gradient is a reduction
        return [same(AllReduce(ranks=op.ranks, bytes_per_rank=op.bytes_per_rank, name=f"{op.name}.grad"))]
    if isinstance(op, AllReduce):  # reduce marker: its gradient is a gather
        return [same(AllGather(ranks=op.ranks, bytes_per_rank=op.bytes_per_rank, name=f"{op.name}.grad"))]
    if op.kind in (OpKind.ELEMENTWISE, OpKind.REDUCE):
        return [same(op), same(op)]
    return [same(op)]  # gathers, all-to-all, send/recv, copies: the same traffic the other way


def backward(graph: Graph, phase: Phase = Phase.BACKWARD) -> Graph:
    """The backward of `graph`'s nodes, in the order it runs.

    >>> from tapeout.workloads.ops import Matmul
    >>> fwd = Graph((Node(Matmul(m=64, n=32, k=16, name="mm")),))
    >>> [(n.op.m, n.op.n, n.op.k) for n in backward(fwd).nodes]
    [(64, 16, 32), (16, 32, 64)]
    """
    nodes: list[Node] = []
    for node in reversed(graph.nodes):
        nodes.extend(_node_backward(node, phase))
    return Graph(tuple(nodes))


def adam(params: float, stored: Precision) -> Graph:
    """One optimizer step over `params` parameters: the gradients' global norm for clipping (GPT-3
    clips at 1.0, Brown et al. 2020, appendix B; Megatron's clip_grad_norm_fp32) reads every fp32
    gradient once; Adam reads the fp32 master weight, both moments and the gradient and writes the
    three states; the weight the next step computes with is written in its stored format.
    34 bytes per parameter with 16-bit weights.

    >>> round(sum(n.op.bytes for n in adam(1e9, "bf16").nodes) / 1e9)
    34
    """
    nodes = (
        Elementwise(
            elements=params, reads=1, writes=0, flops_per_element=2, precision="fp32", name="grad_norm"
        ),
        Elementwise(elements=params, reads=4, writes=3, flops_per_element=10, precision="fp32", name="adam"),
        Elementwise(
            elements=params, reads=0, writes=1, flops_per_element=0, precision=stored, name="weights"
        ),
    )
    return Graph(tuple(Node(op, phase=Phase.OPTIMIZER) for op in nodes))
