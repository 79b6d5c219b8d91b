"""Transformer language models, described in the keys of a Hugging Face `config.json`.

One typed config covers dense (GPT, Llama), grouped-query attention, mixture-of-experts (Mixtral)
and DeepSeek-V3 (multi-head latent attention, shared plus routed experts, dense first layers).
Parameter counts are exact sums over the weight matrices the architecture has.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tapeout.checks import MAX_COUNT, MAX_LAYERS
from tapeout.frozen import Frozen

PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Architecture = Literal["gpt", "llama", "mixtral", "deepseek_v3", "bert", "nemotron"]

# config.json keys that say nothing about cost (tokenizer ids, init, dtype, library versions,
# rope scaling details): accepted and ignored. Any other unknown key is an error.
IGNORED_HF_KEYS = frozenset({
    "architectures", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
    "transformers_version", "initializer_range", "rms_norm_eps", "layer_norm_eps",
    "layer_norm_epsilon", "rope_theta", "rope_scaling", "use_cache", "pretraining_tp",
    "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop",
    "embd_pdrop", "attn_pdrop", "classifier_dropout", "output_router_logits",
    "router_aux_loss_coef", "router_jitter_noise", "aux_loss_alpha",
    "scoring_func", "seq_aux", "topk_method", "topk_group", "n_group", "norm_topk_prob",
    "routed_scaling_factor", "ep_size", "quantization_config", "num_nextn_predict_layers",
    "gradient_checkpointing", "task_specific_params", "id2label", "label2id", "_name_or_path",
    "bias", "norm_eps", "rotary_pct", "rotary_percentage", "rotary_dim", "mlp_ratio",
    "scale_attn_weights", "summary_type", "summary_use_proj", "summary_activation",
    "summary_proj_to_labels", "summary_first_dropout", "tokenizer_class", "gradient_clipping",
    "chunk_size_feed_forward", "is_decoder",
    "attn_implementation", "partial_rotary_factor", "kv_channels", "activation_function",
})  # fmt: skip


class LLMConfig(Frozen):
    """A transformer language model. Keys are those of Hugging Face configs; `architecture`
    names the family when the file has no `model_type`."""

    architecture: Architecture
    hidden_size: PosInt
    num_hidden_layers: Annotated[int, Field(gt=0, le=MAX_LAYERS)]
    num_attention_heads: PosInt
    num_key_value_heads: PosInt | None = None
    head_dim: PosInt | None = None
    intermediate_size: PosInt | None = None
    vocab_size: PosInt
    max_position_embeddings: PosInt = 2048
    position_embedding_type: Literal["absolute", "rotary"] | None = None
    tie_word_embeddings: bool | None = None
    attention_bias: bool | None = None
    mlp_bias: bool | None = None
    hidden_act: str | None = None
    parallel_attn: bool = False
    type_vocab_size: Count = 2
    # mixture of experts (Mixtral keys)
    num_local_experts: PosInt | None = None
    num_experts_per_tok: PosInt | None = None
    # DeepSeek-V3 keys: experts and multi-head latent attention
    n_routed_experts: PosInt | None = None
    n_shared_experts: Count = 0
    moe_intermediate_size: PosInt | None = None
    first_k_dense_replace: Count = 0
    moe_layer_freq: PosInt = 1
    q_lora_rank: PosInt | None = None
    kv_lora_rank: PosInt | None = None
    qk_nope_head_dim: PosInt | None = None
    qk_rope_head_dim: PosInt | None = None
    v_head_dim: PosInt | None = None
    # sliding-window attention (Mistral; Qwen2 from layer `max_window_layers` when enabled)
    sliding_window: PosInt | None = None
    use_sliding_window: bool | None = None
    max_window_layers: Count | None = None

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        kv = self.kv_heads
        if self.num_attention_heads % kv:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads {kv}"
            )
        if self.architecture == "mixtral" and (
            self.num_local_experts is None or self.num_experts_per_tok is None
        ):
            raise ValueError("a mixtral model needs num_local_experts and num_experts_per_tok")
        if self.architecture == "deepseek_v3":
            need = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")  # fmt: skip
            missing = [k for k in need if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a deepseek_v3 model needs {', '.join(missing)}")
        if self.experts and self.num_experts_per_tok and self.num_experts_per_tok > self.experts:
            raise ValueError(
                f"num_experts_per_tok {self.num_experts_per_tok} exceeds the {self.experts} experts"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}; give head_dim"
            )
        return self

    # ---- derived -------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def experts(self) -> int:
        return self.num_local_experts or self.n_routed_experts or 0

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def gated_mlp(self) -> bool:
        if self.architecture in ("gpt", "bert", "nemotron"):
            return False
        return self.hidden_act not in ("relu2", "gelu", "gelu_new", "gelu_pytorch_tanh")

    @property
    def tied(self) -> bool:
        if self.tie_word_embeddings is not None:
            return self.tie_word_embeddings
        return self.architecture in ("gpt", "bert")

    @property
    def learned_positions(self) -> bool:
        if self.position_embedding_type is not None:
            return self.position_embedding_type == "absolute"
        return self.architecture in ("gpt", "bert")

    @property
    def layernorm_bias(self) -> bool:
        return self.architecture in ("gpt", "bert")

    def windowed_layer(self) -> int | None:
        """The first layer whose attention is limited to a sliding window shorter than the
        context (None: every layer attends to the whole context)."""
        w = self.sliding_window
        if w is None or self.use_sliding_window is False or w >= self.max_position_embeddings:
            return None
        first = (self.max_window_layers or 0) if self.use_sliding_window else 0
        return first if first < self.num_hidden_layers else None

    def is_moe_layer(self, layer: int) -> bool:
        if not self.is_moe:
            return False
        return (
            layer >= self.first_k_dense_replace
            and (layer - self.first_k_dense_replace) % self.moe_layer_freq == 0
        )

    # ---- parameter counts ----------------------------------------------------------------
    def attention_params(self) -> int:
        h = self.hidden_size
        heads, kv, d = self.num_attention_heads, self.kv_heads, self.dim_per_head
        if self.is_mla:
            assert self.kv_lora_rank and self.qk_nope_head_dim and self.qk_rope_head_dim
            assert self.v_head_dim
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * heads * qk
            else:
                q = h * heads * qk
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv_a + kv_b + heads * self.v_head_dim * h
        weights = h * heads * d + 2 * h * kv * d + heads * d * h
        bias = (
            self.attention_bias if self.attention_bias is not None else self.architecture in ("gpt", "bert")
        )
        return weights + ((heads + 2 * kv) * d + h if bias else 0)

    def mlp_params(self, ffn: int) -> int:
        h = self.hidden_size
        mats = 3 if self.gated_mlp else 2
        bias = self.mlp_bias if self.mlp_bias is not None else self.architecture in ("gpt", "bert")
        return mats * h * ffn + ((mats - 1) * ffn + h if bias else 0)

    def moe_params(self) -> tuple[int, int]:
        """(all expert parameters of one MoE layer, those one token uses)."""
        h = self.hidden_size
        ffn = self.moe_intermediate_size or self.ffn_size
        expert = self.mlp_params(ffn)
        router = h * self.experts + (self.experts if self.architecture == "deepseek_v3" else 0)
        shared = self.n_shared_experts * expert
        top_k = self.num_experts_per_tok or 1
        return router + shared + self.experts * expert, router + shared + top_k * expert

    def norm_params(self) -> int:
        per_norm = self.hidden_size * (2 if self.layernorm_bias else 1)
        return (1 if self.parallel_attn else 2) * per_norm  # MLA's latent norms: attention_params

    def layer_params(self, layer: int) -> tuple[int, int]:
        """(total, active per token) parameters of transformer layer `layer`."""
        base = self.attention_params() + self.norm_params()
        if self.is_moe_layer(layer):
            total, active = self.moe_params()
            return base + total, base + active
        mlp = self.mlp_params(self.ffn_size)
        return base + mlp, base + mlp

    def embedding_params(self) -> int:
        h = self.hidden_size
        n = self.vocab_size * h
        if self.learned_positions:
            n += self.max_position_embeddings * h
        if self.architecture == "bert":
            n += self.type_vocab_size * h + 2 * h  # token types and the embedding LayerNorm
        return n

    def head_params(self) -> int:
        h = self.hidden_size
        final_norm = 0 if self.architecture == "bert" else h * (2 if self.layernorm_bias else 1)
        if self.architecture == "bert":
            # pooler, the masked-LM transform with its LayerNorm, the decoder bias, next-sentence
            return h * h + h + h * h + h + 2 * h + self.vocab_size + 2 * h + 2
        lm_head = 0 if self.tied else self.vocab_size * h
        bias = self.vocab_size if self.architecture == "gpt" and not self.tied else 0
        return final_norm + lm_head + bias

    def param_count(self) -> int:
        """Total parameters.

        >>> LLMConfig(architecture="llama", hidden_size=4096, num_hidden_layers=32,
        ...           num_attention_heads=32, intermediate_size=11008, vocab_size=32000).param_count()
        6738415616
        """
        layers = sum(self.layer_params(i)[0] for i in range(self.num_hidden_layers))
        return self.embedding_params() + layers + self.head_params()

    def active_param_count(self) -> int:
        """Parameters one token touches (the routed experts it is sent to, not all)."""
        layers = sum(self.layer_params(i)[1] for i in range(self.num_hidden_layers))
        return self.embedding_params() + layers + self.head_params()

    def with_layers(self, layers: int) -> LLMConfig:
        return self.model_copy(update={"num_hidden_layers": layers})
