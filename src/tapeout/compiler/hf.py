"""Hugging Face models from the model catalog's configs, with random weights and no download:
`LlamaForCausalLM`, `MixtralForCausalLM` and `DeepseekV3ForCausalLM` (built on the meta device
when only timing is wanted), and a wrapper that returns the logits alone so the model exports."""

from __future__ import annotations

from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.errors import TapeoutError
from tapeout.workloads.llm import LLMConfig

# The transformers class each catalog architecture builds as.
CAUSAL_LM = {
    "llama": "LlamaForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
DEEPSEEK_KEYS = (
    "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts",
    "n_shared_experts", "moe_intermediate_size", "first_k_dense_replace", "num_experts_per_tok",
)  # fmt: skip


class Logits(torch.nn.Module):
    """A causal language model called on token ids, returning its logits (no cache)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits  # type: ignore[no-any-return]


def hf_config(config: LLMConfig, layers: int | None = None) -> Any:
    """The transformers config of a catalog model (`layers` to keep fewer layers)."""
    try:
        import transformers
    except ImportError as exc:
        raise TapeoutError(
            "building catalog models needs transformers: pip install 'tapeout[torch]'"
        ) from exc
    c = config.with_layers(layers) if layers else config
    common: dict[str, Any] = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.ffn_size,
                  num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                  num_key_value_heads=c.kv_heads, head_dim=c.dim_per_head, tie_word_embeddings=c.tied,
                  max_position_embeddings=c.max_position_embeddings)  # fmt: skip
    if c.architecture == "llama":
        return transformers.LlamaConfig(**common)
    if c.architecture == "mixtral":
        return transformers.MixtralConfig(**common, num_local_experts=c.experts,
                                          num_experts_per_tok=c.num_experts_per_tok or 1)  # fmt: skip
    if c.architecture == "deepseek_v3":  # multi-head latent attention and routed plus shared experts
        mla_moe = {k: getattr(c, k) for k in DEEPSEEK_KEYS}
        return transformers.DeepseekV3Config(
            **{k: v for k, v in common.items() if k != "head_dim"}, **mla_moe
        )
    raise TapeoutError(
        f"field 'model': building a {c.architecture} model is not supported; catalog models of "
        f"architecture {', '.join(CAUSAL_LM)} build (others: pass MODULE:FACTORY)"
    )


def causal_lm(config: LLMConfig, *, layers: int | None = None, meta: bool = True) -> Logits:
    """A randomly initialised causal LM of the catalog config, wrapped to return its logits."""
    import transformers

    hf = hf_config(config, layers)
    cls = getattr(transformers, CAUSAL_LM[config.architecture])
    with torch.device("meta" if meta else "cpu"):
        model = cls(hf)
    model.train(False)
    return Logits(model)


def token_ids(config: LLMConfig, batch: int, seq: int, *, meta: bool = True) -> torch.Tensor:
    if meta:
        return torch.empty((batch, seq), dtype=torch.long, device="meta")
    return torch.randint(0, config.vocab_size, (batch, seq))
