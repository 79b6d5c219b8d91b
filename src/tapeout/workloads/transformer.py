"""Lowering of transformer language models to the op graph: one layer (dense, grouped-query
attention, mixture of experts with routed and shared experts, multi-head latent attention), its
core attention, the embeddings and the output head. Serving, training, the planner and the
compiler's checks all read these graphs; nothing else writes a layer's ops.

A layer graph holds the token-parallel ops of one layer in the order they run, for `tokens` tokens
of one rank's batch, with the collectives of tensor and expert parallelism at one rank (`graph`):
`tp.gather` where a sharded stream must be whole again (sequence parallelism's all-gather),
`tp.reduce` where a split matmul's partial sums meet, `ep.dispatch` and `ep.combine` where tokens
travel to and from their experts. The core attention is its own graph: its shape follows the batch
(prefill chunks, decode contexts), not the token count. Live tensors: the weights, the activations
a backward needs (Korthikanti et al. 2022, section 4.1), the serving workspace per token, and the
key/value cache per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from tapeout.errors import TapeoutError
from tapeout.precision import BYTES_PER_ELEMENT, Numerics, Precision, narrow, wider
from tapeout.workloads.graph import COLLECTIVE_KINDS, Dims, Graph, Node, Phase, Role, Split, Tensor
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.moe import BALANCED, RouterStats, Routing
from tapeout.workloads.ops import (
    AllGather,
    AllReduce,
    AllToAll,
    Attention,
    Copy,
    Elementwise,
    Gather,
    Matmul,
    Op,
    OpKind,
    Reduce,
)

Mla = Literal["expanded", "absorbed"]
Kernel = Literal["flash", "unfused"]
MASK: Precision = "int8"  # dropout masks: one byte per element

# The op fields a layer's token count scales (the dynamic dimension of its graph).
TOKENS = ("tokens",)
PER_TOKEN: dict[OpKind, Dims] = {
    OpKind.MATMUL: (("m", TOKENS),), OpKind.ELEMENTWISE: (("elements", TOKENS),),
    OpKind.REDUCE: (("rows", TOKENS),), OpKind.COPY: (("size_bytes", TOKENS),),
    OpKind.GATHER: (("lookups", TOKENS), ("outputs", TOKENS)),
    **{k: (("bytes_per_rank", TOKENS),) for k in COLLECTIVE_KINDS},
}  # fmt: skip
TP_N = (Split("tp", "n"),)
TP_K = (Split("tp", "k"),)
SP_ROWS = (Split("sp", "rows"),)
SP_ELEMENTS = (Split("sp", "elements"),)
TP_ELEMENTS = (Split("tp", "elements"),)


@lru_cache(maxsize=256)
def census(model: LLMConfig) -> tuple[tuple[bool, int], ...]:
    """(has experts, how many layers) for each kind of layer, in the order they first appear.

    >>> from tapeout.workloads.models import get_model
    >>> census(get_model("deepseek-v3").config)
    ((False, 3), (True, 58))
    """
    windowed = model.windowed_layer()
    if windowed is not None:
        raise TapeoutError(
            f"model: sliding-window attention (window {model.sliding_window} tokens) in layer {windowed} is "
            f"not lowered: its attention would be counted over the whole context of up to "
            f"{model.max_position_embeddings} tokens"
        )
    kinds: dict[bool, int] = {}
    for i in range(model.num_hidden_layers):
        moe = model.is_moe_layer(i)
        kinds[moe] = kinds.get(moe, 0) + 1
    return tuple(kinds.items())


@dataclass
class _Layer:
    """Collects one layer's nodes and tensors."""

    model: LLMConfig
    num: Numerics
    tokens: int
    router: RouterStats = BALANCED
    nodes: list[Node] = field(default_factory=list)
    live: list[Tensor] = field(default_factory=list)

    def add(self, op: Op, split: tuple[Split, ...] = (), routed: Routing | None = None) -> None:
        dims = () if routed is not None else PER_TOKEN[op.kind]
        self.nodes.append(Node(op, split=split, routed=routed, dims=dims))

    def mm(
        self, name: str, n: int, k: int, split: tuple[Split, ...], *, m: int | None = None, groups: int = 1,
        routed: Routing | None = None, stream: bool = False,
    ) -> None:  # fmt: skip
        """A matmul of the layer's tokens (or `m` rows) by a weight matrix of k x n."""
        num = self.num
        precision = num.stream if stream else num.compute
        op = Matmul(m=m or self.tokens, n=n, k=k, groups=groups, precision=precision,
                    weight_precision=None if stream else num.weights, out_precision=num.stream, name=name)  # fmt: skip
        self.add(op, split, routed)

    def weight(self, name: str, params: float, split: tuple[Split, ...] = ()) -> None:
        self.live.append(Tensor(name, params, self.num.stored, Role.WEIGHT, split))

    def saved(self, name: str, width: float, precision: Precision, split: tuple[Split, ...], role: Role = Role.ACTIVATION) -> None:  # fmt: skip
        self.live.append(Tensor(name, self.tokens * width, precision, role, split, dims=TOKENS))

    def workspace(self, name: str, width: float, split: tuple[Split, ...] = (), precision: Precision | None = None) -> None:  # fmt: skip
        self.live.append(Tensor(name, width, precision or self.num.stream, Role.WORKSPACE, split))

    def stream_op(self, name: str, *, norm: bool) -> None:
        t, h, p = self.tokens, self.model.hidden_size, self.num.stream
        if norm:
            self.add(Reduce(rows=t, cols=h, precision=p, name=name), SP_ROWS)
        else:
            self.add(Elementwise(elements=t * h, reads=2, writes=1, precision=p, name=name), SP_ELEMENTS)

    def marker(self, kind: Literal["gather", "reduce"], axis: Literal["tp", "moe"] = "tp") -> None:
        size = self.tokens * self.model.hidden_size * BYTES_PER_ELEMENT[self.num.stream]
        op = AllGather if kind == "gather" else AllReduce
        self.add(op(ranks=1, bytes_per_rank=size, name=f"{axis}.{kind}"), (Split(axis, "ranks"),))

    @property
    def cast(self) -> Precision:
        """What a matmul input is kept in for its weight gradient: its 8-bit cast under 8-bit
        training (Transformer Engine, AQT), else the stream's format."""
        return self.num.compute if narrow(self.num.compute) else self.num.stream


def _qk_dim(c: LLMConfig) -> int:
    if c.is_mla:
        assert c.qk_nope_head_dim and c.qk_rope_head_dim
        return c.qk_nope_head_dim + c.qk_rope_head_dim
    return c.dim_per_head


def _v_dim(c: LLMConfig) -> int:
    return (c.v_head_dim or c.dim_per_head) if c.is_mla else c.dim_per_head


def _attention_block(b: _Layer) -> None:
    """The projections around the core attention, their weights and saved activations."""
    c, num, h = b.model, b.num, b.model.hidden_size
    heads, kv, d, dv = c.num_attention_heads, c.kv_heads, _qk_dim(c), _v_dim(c)
    if c.is_mla:
        # Multi-head latent attention: low-rank query and key/value projections (DeepSeek-V3,
        # section 2.1.1); the latent is expanded to every head in the core attention graph.
        assert c.kv_lora_rank and c.qk_rope_head_dim
        if c.q_lora_rank:
            b.mm("q_a", c.q_lora_rank, h, ())
            b.mm("q_b", heads * d, c.q_lora_rank, TP_N)
        else:
            b.mm("q", heads * d, h, TP_N)
        b.mm("kv_a", c.kv_lora_rank + c.qk_rope_head_dim, h, ())
        kv = heads
    else:
        b.mm("qkv", (heads + 2 * kv) * d, h, (Split("tp", "n", (heads, kv, kv)),))
    b.mm("o", h, heads * dv, TP_K)
    b.weight("attention", c.attention_params(), TP_ELEMENTS)
    # Saved for the backward: the attention input's cast, query, key, value, the projection's input.
    b.saved("attention.input", h, b.cast, SP_ELEMENTS)
    b.saved("q", heads * d, num.stream, TP_ELEMENTS)
    b.saved("kv", kv * (d + dv), num.stream, TP_ELEMENTS)
    b.saved("o.input", heads * dv, b.cast, TP_ELEMENTS)
    b.saved("attention.dropout", h, MASK, SP_ELEMENTS)
    qkv_split = (Split("tp", "elements", () if c.is_mla else (heads, kv, kv)),)
    b.workspace("qkv", (heads + 2 * kv) * d, qkv_split)


def _mlp(b: _Layer, name: str, width: int, split_n: tuple[Split, ...], split_k: tuple[Split, ...],
         split_e: tuple[Split, ...], rows: int | None = None, groups: int = 1, routed: Routing | None = None) -> None:  # fmt: skip
    """Up-projection (both halves of a gated MLP in one product), activation, down-projection."""
    c, h = b.model, b.model.hidden_size
    g = 2 if c.gated_mlp else 1
    b.mm(f"{name}.up", g * width, h, split_n, m=rows, groups=groups, routed=routed)
    elements = (rows or b.tokens) * groups * width
    b.add(Elementwise(elements=elements, reads=g, writes=1, precision=b.num.stream, name=f"{name}.act"),
          split_e, routed)  # fmt: skip
    b.mm(f"{name}.down", h, width, split_k, m=rows, groups=groups, routed=routed)


def _dense_block(b: _Layer) -> None:
    c, num = b.model, b.num
    ffn, g = c.ffn_size, 2 if c.gated_mlp else 1
    _mlp(b, "mlp", ffn, TP_N, TP_K, TP_ELEMENTS)
    b.weight("mlp", c.mlp_params(ffn), TP_ELEMENTS)
    b.saved("mlp.input", c.hidden_size, b.cast, SP_ELEMENTS)
    b.saved("mlp.up", g * ffn, num.stream, TP_ELEMENTS)
    b.saved("mlp.act", ffn, b.cast, TP_ELEMENTS)
    b.workspace("mlp", 2 * ffn, TP_ELEMENTS)


def _moe_block(b: _Layer) -> None:
    """Router, token permutation, the routed experts as grouped GEMMs, shared experts. The expert
    ops and the exchanges carry the routing (`workloads.moe`): once sharded, the busiest
    expert-parallel rank's rows and payload set their size."""
    c, num, t, h = b.model, b.num, b.tokens, b.model.hidden_size
    e, k, g = c.experts, c.num_experts_per_tok or 1, 2 if c.gated_mlp else 1
    ffn = c.moe_intermediate_size or c.ffn_size
    routing = Routing(
        experts=e, top_k=k, tokens=t, skew=b.router.skew, capacity_factor=b.router.capacity_factor
    )
    groups, rows = routing.load(t, e)
    b.mm("router", e, h, (), stream=True)
    # Each of a token's k copies is gathered into its expert's order before the experts and
    # scattered back, weighed, after them (Megatron-Core's token dispatcher; TensorRT-LLM's
    # expand and finalize kernels).
    copies = t * k * h
    moved = copies * BYTES_PER_ELEMENT[num.stream]
    b.add(Copy(size_bytes=moved, name="moe.permute"))
    # The exchanges follow the routing too: the busiest rank's payload sets their time.
    b.add(
        AllToAll(ranks=1, bytes_per_rank=copies * BYTES_PER_ELEMENT[num.dispatch], name="ep.dispatch"),
        (Split("ep", "ranks"),),
        routing,
    )
    if num.dispatch != num.compute:
        # Copies delivered wider than the experts read them (8-bit training: Megatron-Core sends
        # 16-bit states) are quantized by the grouped linear layer (Transformer Engine: a 16-bit
        # read, row- and column-wise 8-bit writes per element; a dense layer fuses it into its
        # norm). The backward's gradient cast a dense layer runs too: no backward op here.
        cast = Elementwise(elements=rows * groups * h, reads=1, writes=1, flops_per_element=0.0,
                           precision=num.stream, name="experts.cast")  # fmt: skip
        b.nodes.append(Node(cast, split=(Split("ep", "elements"),), routed=routing, grad=()))
    rows_m = Split("ep", "m")  # the routing sets the rows (and the experts a rank runs)
    expert_n, expert_k = (rows_m, Split("etp", "n")), (rows_m, Split("etp", "k"))
    expert_e = (Split("ep", "elements"), Split("etp", "elements"))
    _mlp(b, "experts", ffn, expert_n, expert_k, expert_e, rows=rows, groups=groups, routed=routing)
    b.add(
        AllToAll(ranks=1, bytes_per_rank=copies * BYTES_PER_ELEMENT[num.stream], name="ep.combine"),
        (Split("ep", "ranks"),),
        routing,
    )
    b.add(Copy(size_bytes=moved, name="moe.unpermute"))
    if c.n_shared_experts:
        _mlp(b, "shared", c.n_shared_experts * ffn, TP_N, TP_K, TP_ELEMENTS)
    router = h * e + (e if c.architecture == "deepseek_v3" else 0)
    b.weight("router", router)
    b.weight("shared", c.n_shared_experts * c.mlp_params(ffn), TP_ELEMENTS)
    b.weight("experts", e * c.mlp_params(ffn), (Split("ep", "elements"), Split("etp", "elements")))
    # Saved: the router's input; per expert a token visits, its MLP items on the expert's split
    # and its routed copy and output, whole on every tensor-parallel rank (the dispatcher gathers
    # each expert's tokens to all the ranks that hold a slice of it).
    b.saved("router.input", h, num.stream, SP_ELEMENTS)
    b.saved("experts.up", (k + c.n_shared_experts) * g * ffn, num.stream, (Split("etp", "elements"),))
    b.saved("experts.act", (k + c.n_shared_experts) * ffn, b.cast, (Split("etp", "elements"),))
    b.saved("experts.copy", k * h, b.cast, ())
    b.saved("experts.output", k * h, num.stream, ())
    b.workspace("mlp", 2 * max(ffn, c.ffn_size), TP_ELEMENTS)


def layer(
    model: LLMConfig, tokens: int, numerics: Numerics, *, moe: bool, residual_kernels: bool = False,
    router: RouterStats = BALANCED,
) -> Graph:  # fmt: skip
    """The token-parallel ops of one layer for `tokens` tokens, in the order they run.

    `residual_kernels`: the residual additions run as kernels of their own (training frameworks:
    Megatron's bias-dropout-add), rather than fused into the next norm (inference engines'
    fused add-and-norm).

    >>> from tapeout.precision import Numerics
    >>> from tapeout.workloads.models import get_model
    >>> g = layer(get_model("llama-3.1-8b").config, 2048, Numerics.training("bf16"), moe=False)
    >>> [n.name for n in g.nodes][:4]
    ['norm.attention', 'tp.gather', 'qkv', 'o']
    """
    if tokens < 1:
        raise TapeoutError(f"field 'tokens': a layer needs >= 1 token, got {tokens}")
    return layer_template(model, numerics, moe, residual_kernels, router).at(tokens=tokens)


@lru_cache(maxsize=1024)
def layer_template(
    model: LLMConfig, numerics: Numerics, moe: bool, residual_kernels: bool = False,
    router: RouterStats = BALANCED,
) -> Graph:  # fmt: skip
    """One layer lowered for one token: `.at(tokens)` gives it for any token count; `router`: the
    routing statistics a run states (MoE layers)."""
    c, h = model, model.hidden_size
    b = _Layer(model, numerics, 1, router)
    b.stream_op("norm.attention", norm=True)
    b.saved("layer.input", h, numerics.stream, SP_ELEMENTS, Role.INPUT)
    b.marker("gather")
    _attention_block(b)
    if not c.parallel_attn:  # GPT-J runs attention and MLP side by side on one norm's output
        b.marker("reduce")
        if residual_kernels:
            b.stream_op("residual.attention", norm=False)
        b.stream_op("norm.mlp", norm=True)
        b.saved("norm.mlp.input", h, numerics.stream, SP_ELEMENTS)
        b.marker("gather")
    if moe:
        _moe_block(b)
    else:
        _dense_block(b)
    b.marker("reduce", "tp" if (not moe or c.n_shared_experts) else "moe")
    if residual_kernels:
        b.stream_op("residual.mlp", norm=False)
    b.saved("mlp.dropout", h, MASK, SP_ELEMENTS)
    b.weight("norms", c.norm_params())
    b.workspace("stream", 4 * h)
    b.live.append(kv_cache(model, numerics))
    return Graph(tuple(b.nodes), tuple(b.live))


def kv_cache(model: LLMConfig, numerics: Numerics) -> Tensor:
    """Key/value cache of one layer, per token: per key/value head (a tensor-parallel rank keeps at
    least one), or the latent of multi-head latent attention, on every rank."""
    c = model
    if c.is_mla:
        assert c.kv_lora_rank and c.qk_rope_head_dim
        return Tensor("kv_cache", c.kv_lora_rank + c.qk_rope_head_dim, numerics.kv, Role.KV_CACHE)
    split = (Split("tp", "elements", (c.kv_heads,)),)
    return Tensor("kv_cache", 2 * c.kv_heads * c.dim_per_head, numerics.kv, Role.KV_CACHE, split)


def attention(
    model: LLMConfig,
    *,
    batch: int,
    q_len: int,
    kv_len: int,
    numerics: Numerics,
    phase: Phase = Phase.FORWARD,
    causal: bool = True,
    mla: Mla = "expanded",
    kernel: Kernel = "flash",
) -> Graph:
    """The core attention of one layer: `batch` sequences of `q_len` queries over `kv_len` keys.

    Multi-head latent attention is `expanded` (the latent's keys and values computed for every
    head, as training and prefill run it) or `absorbed` (the up-projections folded into the
    query and the output, attention over the latent shared by all heads, as decode runs it).
    `unfused` writes the score matrix to memory (softmax, then the product with the values).
    """
    fused = attention_template(model, numerics, phase, causal, mla).at(batch=batch, q=q_len, kv=kv_len)
    if kernel == "flash":
        return fused
    c = model
    unfused = _unfused(batch * c.num_attention_heads, q_len, _qk_dim(c), _v_dim(c), numerics.attention, phase)
    expand = tuple(n for n in fused.nodes if n.op.kind == OpKind.MATMUL)  # the latent's expansion
    return Graph(expand + unfused)


@lru_cache(maxsize=1024)
def attention_template(
    model: LLMConfig,
    numerics: Numerics,
    phase: Phase = Phase.FORWARD,
    causal: bool = True,
    mla: Mla = "expanded",
) -> Graph:
    """The core attention lowered for one sequence of one query and one key: `.at(batch=, q=,
    kv=)` gives it for any shape."""
    c, num = model, numerics
    heads, d, dv = c.num_attention_heads, _qk_dim(c), _v_dim(c)
    by_heads = (Split("tp", "heads"),)
    shape: Dims = (("batch", ("batch",)), ("q_len", ("q",)), ("kv_len", ("kv",)))
    nodes: list[Node] = []
    if c.is_mla:
        assert c.kv_lora_rank and c.qk_nope_head_dim and c.qk_rope_head_dim and c.v_head_dim
        lat = c.kv_lora_rank

        def mm(name: str, n: int, k: int, rows: tuple[str, ...], groups: int = 1) -> Node:
            op = Matmul(m=1, n=n, k=k, groups=groups, precision=num.compute, weight_precision=num.weights,
                        out_precision=num.stream, name=name)  # fmt: skip
            split = (Split("tp", "groups"),) if groups > 1 else TP_N
            return Node(op, phase=phase, split=split, dims=(("m", rows),))

        if mla == "absorbed":
            core = Attention(batch=1, q_len=1, kv_len=1, heads=heads, kv_heads=1,
                             head_dim=lat + c.qk_rope_head_dim, head_dim_v=lat, shared_kv=True, causal=causal,
                             precision=num.attention, kv_precision=num.kv, name="attention")  # fmt: skip
            return Graph((
                mm("absorb_k", lat, c.qk_nope_head_dim, ("batch", "q"), heads),
                Node(core, phase=phase, split=by_heads, dims=shape),
                mm("absorb_v", c.v_head_dim, lat, ("batch", "q"), heads),
            ))  # fmt: skip
        nodes.append(mm("kv_b", heads * (c.qk_nope_head_dim + dv), lat, ("batch", "kv")))
        kv_heads = heads
    else:
        kv_heads = c.kv_heads
    # Expanded latent attention reads the keys and values it just computed, not the cache.
    kv_precision = None if c.is_mla else num.kv
    core = Attention(batch=1, q_len=1, kv_len=1, heads=heads, kv_heads=kv_heads, head_dim=d, head_dim_v=dv,
                     causal=causal, precision=num.attention, kv_precision=kv_precision, name="attention")  # fmt: skip
    return Graph((*nodes, Node(core, phase=phase, split=by_heads, dims=shape)))


def _unfused(bh: int, s: int, d: int, dv: int, precision: Precision, phase: Phase) -> tuple[Node, ...]:
    """Attention with the score matrix in memory, for `bh` sequence-heads of `s` tokens: the
    query-key product, a fused scale-mask-softmax over all the scores (the causal mask saves no
    work here), and the product with the values. The softmax's gradient reads its output and
    the incoming gradient."""
    scores = float(bh) * s * s
    groups = (Split("tp", "groups"),)
    softmax = Elementwise(
        elements=scores, reads=1, writes=1, flops_per_element=5, precision=precision, name="softmax"
    )
    grad = (
        Elementwise(
            elements=scores, reads=2, writes=1, flops_per_element=3, precision=precision, name="softmax.grad"
        ),
    )
    return (
        Node(Matmul(m=s, n=s, k=d, groups=bh, precision=precision, name="scores"), phase=phase, split=groups),
        Node(softmax, phase=phase, split=TP_ELEMENTS, grad=grad),
        Node(Matmul(m=s, n=dv, k=s, groups=bh, precision=precision, name="context"), phase=phase, split=groups),
    )  # fmt: skip


def unfused_scores(model: LLMConfig, batch: int, seq_len: int, numerics: Numerics) -> Graph:
    """What unfused attention keeps for its backward: the scores and the softmax's output, with
    its dropout mask (Korthikanti et al. 2022: 5 a s^2 b bytes per layer)."""
    scores = float(batch) * model.num_attention_heads * seq_len * seq_len
    p = numerics.stream
    live = (
        Tensor("scores", scores, p, Role.SCORES, TP_ELEMENTS),
        Tensor("softmax", scores, p, Role.SCORES, TP_ELEMENTS),
        Tensor("softmax.dropout", scores, MASK, Role.SCORES, TP_ELEMENTS),
    )
    return Graph((), live)


def embedding(model: LLMConfig, tokens: int, numerics: Numerics) -> Graph:
    """Token embedding: each token's row of the vocabulary-parallel table (each tensor-parallel
    rank holds a slice of the vocabulary and looks up the tokens that fall in it; the partial
    embeddings meet in a `tp.reduce`)."""
    c, h = model, model.hidden_size
    rows = tokens * h * BYTES_PER_ELEMENT[numerics.stream]
    nodes = (
        Node(Gather(lookups=tokens, dim=h, rows=c.vocab_size, outputs=tokens, precision=numerics.stream,
                    name="embedding"), phase=Phase.EMBEDDING, split=(Split("tp", "lookups"),),
             dims=PER_TOKEN[OpKind.GATHER]),
        Node(AllReduce(ranks=1, bytes_per_rank=rows, name="tp.reduce"), phase=Phase.EMBEDDING,
             split=(Split("tp", "ranks"),), dims=PER_TOKEN[OpKind.ALL_REDUCE]),
    )  # fmt: skip  # fmt: skip
    return Graph(
        nodes, (Tensor("embedding", c.embedding_params(), _at_rest(numerics), Role.WEIGHT, TP_ELEMENTS),)
    )


def head(model: LLMConfig, rows: int, numerics: Numerics) -> Graph:
    """The final norm and the output layer (vocabulary-parallel: each rank computes the logits of
    its slice) for `rows` positions that sample a token."""
    c, h, num = model, model.hidden_size, numerics
    nodes = (
        Node(
            Reduce(rows=rows, cols=h, precision=num.stream, name="norm.final"),
            phase=Phase.HEAD,
            dims=PER_TOKEN[OpKind.REDUCE],
        ),
        Node(
            Matmul(m=rows, n=c.vocab_size, k=h, precision=num.head, out_precision=num.stream, name="lm_head"),
            phase=Phase.HEAD,
            split=TP_N,
            dims=PER_TOKEN[OpKind.MATMUL],
        ),
    )
    live = (
        Tensor("head", c.head_params(), _at_rest(num), Role.WEIGHT, TP_ELEMENTS),
        Tensor("logits", c.vocab_size, "fp32", Role.WORKSPACE, TP_ELEMENTS),
    )
    return Graph(nodes, live)


def _at_rest(num: Numerics) -> Precision:
    """Embedding and output tables stay in 16 bits at least under weight quantization."""
    return wider(num.stored, num.stream)


def forward(model: LLMConfig, *, batch: int, seq_len: int, numerics: Numerics) -> Graph:
    """A whole forward pass of `batch` sequences of `seq_len` tokens: embedding, every layer with
    its causal attention, the final norm and the output layer over every position.

    >>> from tapeout.precision import Numerics
    >>> from tapeout.workloads.models import get_model
    >>> g = forward(get_model("llama-3.1-8b").config, batch=1, seq_len=2048, numerics=Numerics.training("bf16"))
    >>> round(g.matmul_flops() / 1e12, 1)
    30.7
    """
    tokens = batch * seq_len
    core = attention(model, batch=batch, q_len=seq_len, kv_len=seq_len, numerics=numerics)
    layers = [count * layer(model, tokens, numerics, moe=moe) for moe, count in census(model)]
    return Graph.join(
        [
            embedding(model, tokens, numerics),
            *layers,
            model.num_hidden_layers * core,
            head(model, tokens, numerics),
        ]
    )
