"""Peer predictor: the PyPI package llm-analysis (github.com/cli99/llm-analysis) for LLM inference
and training.

Install the peer into any environment with ``pip install llm-analysis==0.2.2`` (pulls transformers,
tokenizers and huggingface-hub, no torch). Everything here runs offline: model, GPU and dtype
configs are built in process or read from the JSON files the package ships, and the Hugging Face
fallback of ``llm_analysis.config.get_model_config_by_name`` is never reached.

Run ``python benchmarks/peer_llm_analysis.py`` to print the peer's prediction for a few cases.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PEER_REQUIREMENT = "llm-analysis==0.2.2"

DTYPE_ALIASES: dict[str, str] = {
    "fp8": "w8a8e16",
    "int8": "w8a8e16",
    "w8a8": "w8a8e16",
    "bf16": "w16a16e16",
    "fp16": "w16a16e16",
    "w16a16": "w16a16e16",
    "int4": "w4a16e16",
    "w4a16": "w4a16e16",
}
"""Our precision names to llm-analysis dtype configs (w<weight bits>a<activation bits>e<embedding bits>).

llm-analysis has no FP8: ``w8a8e16`` is the closest, with 1-byte weights, activations and KV cache and
the GPU's ``peak_i8_TFLOPS`` for GEMMs (on H100 equal to the dense FP8 peak)."""

GPU_ALIASES: dict[str, str] = {
    "h100-sxm": "h100-sxm-80gb",
    "h100-pcie": "h100-pcie-80gb",
    "a100-sxm": "a100-sxm-80gb",
    "a100-pcie": "a100-pcie-80gb",
}
"""tapeout chip ids to llm-analysis GPU config names, where they differ."""

HF_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-2-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "hidden_act": "silu",
    },
    "llama-2-13b": {
        "model_type": "llama",
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "hidden_act": "silu",
    },
    "llama-2-70b": {
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "hidden_act": "silu",
    },
    "llama-3.1-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "hidden_act": "silu",
    },
    "llama-3.1-70b": {
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "hidden_act": "silu",
    },
    "gpt3-175b": {
        "model_type": "gpt3",
        "hidden_size": 12288,
        "intermediate_size": 4 * 12288,
        "num_hidden_layers": 96,
        "num_attention_heads": 96,
        "num_key_value_heads": 96,
        "vocab_size": 50257,
        "max_position_embeddings": 2048,
        "hidden_act": "gelu",
    },
}
"""Hugging Face ``config.json`` keys (meta-llama/*-hf) for the models named by our ids.

GPT-3 175B has no Hugging Face checkpoint; its entry uses the same keys with the paper's shape
(ungated GELU MLP of ``4 * hidden``, multi-head attention, 2048-token context)."""

RECOMPUTE_MODES: dict[str, str] = {"none": "NONE", "selective": "SELECTIVE", "full": "FULL"}
"""Our activation-recomputation names to llm-analysis ``ActivationRecomputation`` members.

``SELECTIVE`` is Megatron's selective recomputation (QK^T, softmax, dropout and attention over V
recomputed; https://arxiv.org/abs/2205.05198)."""

_GATED_ACTS = frozenset({"silu", "swiglu", "geglu", "gelu_pytorch_tanh_gated"})


@contextlib.contextmanager
def _quiet_peer() -> Iterator[None]:
    """Silence llm-analysis's logger (literally named ``"__name__"``) for the duration."""
    peer_logger = logging.getLogger("__name__")
    level = peer_logger.level
    peer_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        peer_logger.setLevel(level)


def _load_peer() -> tuple[Any, Any]:
    """Import ``llm_analysis.analysis`` and ``llm_analysis.config`` without transformers' banner."""
    key = "TRANSFORMERS_VERBOSITY"
    previous = os.environ.get(key)
    os.environ[key] = "error"
    try:
        with _quiet_peer():
            analysis = importlib.import_module("llm_analysis.analysis")
            config = importlib.import_module("llm_analysis.config")
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous
    return analysis, config


def peer_available() -> bool:
    """True if llm-analysis can be imported here."""
    try:
        _load_peer()
    except ImportError:
        return False
    return True


def _model_config(config_mod: Any, model: str, hf_config: Mapping[str, Any] | None) -> Any:
    """Build an llm-analysis ``ModelConfig`` without touching the network.

    From Hugging Face keys (``hf_config``, or ``HF_CONFIGS[model]``) when given; gated MLPs (SwiGLU and
    the like, three matrices) are entered as the two-matrix MLP of equal parameter count that
    llm-analysis models, ``ffn_embed_dim = 1.5 * intermediate_size``. Otherwise ``model`` must name a
    config bundled with llm-analysis (e.g. ``upstage_Llama-2-70b-instruct-v2``, whose bundled JSON
    has ``ffn_embed_dim = 4 * hidden``) or be a path to such a JSON file.
    """
    cfg = hf_config if hf_config is not None else HF_CONFIGS.get(model)
    if cfg is not None:
        hidden = int(cfg["hidden_size"])
        inter = int(cfg.get("intermediate_size") or 4 * hidden)
        gated = str(cfg.get("hidden_act", "")).lower() in _GATED_ACTS or cfg.get("model_type") in {
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
        }
        ffn = inter * 3 // 2 if gated else inter
        return config_mod.ModelConfig(
            name=model,
            num_layers=int(cfg["num_hidden_layers"]),
            n_head=int(cfg["num_attention_heads"]),
            hidden_dim=hidden,
            vocab_size=int(cfg["vocab_size"]),
            max_seq_len=cfg.get("max_position_embeddings"),
            num_key_value_heads=cfg.get("num_key_value_heads"),
            ffn_embed_dim=ffn,
            expansion_ratio=ffn / hidden,
            model_type=cfg.get("model_type"),
        )
    name = model.replace("/", "_")
    if name in config_mod.model_configs:
        return config_mod.model_configs[name]
    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        return config_mod.ModelConfig(**json.loads(path.read_text()))
    known = sorted([*HF_CONFIGS, *config_mod.model_configs])
    raise ValueError(f"unknown model {model!r} (no network lookup is done); known: {', '.join(known)}")


def _named(table: Mapping[str, Any], aliases: Mapping[str, str], name: str, what: str) -> Any:
    key = aliases.get(name.lower(), name)
    if key not in table:
        raise ValueError(f"unknown {what} {name!r}; llm-analysis knows: {', '.join(sorted(table))}")
    return table[key]


def run_llm_analysis(
    *,
    model: str,
    gpu: str,
    tp: int,
    batch: int,
    input_len: int,
    output_len: int,
    dtype: str,
    hf_config: Mapping[str, Any] | None = None,
    flops_efficiency: float | None = None,
    hbm_memory_efficiency: float | None = None,
) -> dict[str, float]:
    """Predict one model replica (``tp`` GPUs, tensor parallel) serving ``batch`` requests at once.

    Calls ``llm_analysis.analysis.LLMAnalysis(...).inference(batch_size_per_gpu=batch,
    seq_len=input_len, num_tokens_to_generate=output_len)``. With tensor parallelism every GPU of the
    replica sees the whole batch, so llm-analysis's ``batch_size_per_gpu`` is the replica's batch and
    its throughputs are per replica. Keys of its summary used:

    - ``ttft_s`` = ``prefill_latency``: one forward pass over ``batch x input_len`` tokens.
    - ``tpot_s`` = ``decode_latency``: one decode step for the batch, including ``kv_cache_latency``
      (reading and writing the KV cache sized for ``input_len + output_len`` tokens at every step).
    - ``tokens_per_s`` = ``total_tokens_per_sec`` = ``batch * output_len / (prefill_latency +
      output_len * decode_latency)``: output tokens per second of the replica over the whole request,
      prefill included (the batch is static: all requests start and end together).
    - ``decode_tokens_per_s`` = ``decode_tokens_per_sec`` = ``batch / decode_latency``.
    - ``e2e_s`` = ``total_latency``; ``weight_gb_per_gpu`` / ``kv_cache_gb_per_gpu`` from
      ``weight_memory_per_gpu`` / ``kv_cache_memory_per_gpu`` (GiB); the efficiencies it used.

    ``seconds`` is the wall time of this call. ``dtype`` is one of ``DTYPE_ALIASES`` or an
    llm-analysis dtype config name; ``gpu`` one of ``GPU_ALIASES`` or an llm-analysis GPU name.
    ``flops_efficiency`` / ``hbm_memory_efficiency`` left as None keep llm-analysis's defaults (both
    1.0, i.e. peak TFLOPS and peak HBM bandwidth). Raises ValueError if llm-analysis finds that the
    weights, prefill activations or KV cache do not fit in GPU memory.
    """
    t0 = time.perf_counter()
    analysis_mod, config_mod = _load_peer()
    model_config = _model_config(config_mod, model, hf_config)
    gpu_config = _named(config_mod.gpu_configs, GPU_ALIASES, gpu, "gpu")
    dtype_config = _named(config_mod.dtype_configs, DTYPE_ALIASES, dtype, "dtype")
    with _quiet_peer():
        try:
            peer = analysis_mod.LLMAnalysis(
                model_config,
                gpu_config,
                dtype_config,
                config_mod.ParallelismConfig(tp_size=tp),
                flops_efficiency=flops_efficiency,
                hbm_memory_efficiency=hbm_memory_efficiency,
            )
            summary: dict[str, Any] = peer.inference(
                batch_size_per_gpu=batch,
                seq_len=input_len,
                num_tokens_to_generate=output_len,
            )
        except AssertionError as exc:
            raise ValueError(f"llm-analysis rejected the case: {exc}") from exc
    gib = float(1024**3)
    return {
        "tokens_per_s": float(summary["total_tokens_per_sec"]),
        "decode_tokens_per_s": float(summary["decode_tokens_per_sec"]),
        "ttft_s": float(summary["prefill_latency"]),
        "tpot_s": float(summary["decode_latency"]),
        "e2e_s": float(summary["total_latency"]),
        "weight_gb_per_gpu": float(summary["weight_memory_per_gpu"]) / gib,
        "kv_cache_gb_per_gpu": float(summary["kv_cache_memory_per_gpu"]) / gib,
        "flops_efficiency": float(summary["flops_efficiency"]),
        "hbm_memory_efficiency": float(summary["hbm_memory_efficiency"]),
        "seconds": time.perf_counter() - t0,
    }


def run_llm_analysis_training(
    *,
    model: str,
    gpu: str,
    chips: int,
    tp: int,
    pp: int,
    dp: int,
    seq_len: int,
    global_batch: int,
    micro_batch: int,
    dtype: str,
    recompute: str = "none",
    zero: int = 0,
    flops_efficiency: float = 1.0,
    hbm_memory_efficiency: float = 1.0,
    hf_config: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Predict one training step of ``global_batch`` sequences of ``seq_len`` tokens on ``chips`` GPUs.

    Calls ``llm_analysis.analysis.LLMAnalysis(..., ParallelismConfig(tp_size=tp, pp_size=pp,
    dp_size=dp)).training(batch_size_per_gpu=micro_batch, global_batch_size=global_batch,
    seq_len=seq_len, activation_recomputation=..., ds_zero=DSZeRO(zero))``. llm-analysis takes no
    GPU count; it derives ``tp * pp * dp``, so ``chips`` must equal that product (else ValueError).
    Gradient accumulation steps are derived as ``global_batch / (micro_batch * dp)``. Keys of its
    summary used:

    - ``step_time_s`` = ``latency_per_iter`` = ``latency_per_micro_batch *
      gradient_accumulation_steps``, where ``latency_per_micro_batch`` is the micro batch's
      fwd + bwd (2x fwd) + recompute FLOPs divided by ``tp * pp * achieved_flops``: pure compute at
      ``flops_efficiency`` of the dtype's peak, so no communication, no pipeline bubble.
    - ``tokens_per_s`` = ``global_batch * seq_len / step_time_s`` (computed here).
    - ``achieved_tflops_per_gpu`` = ``achieved_flops``; ``flops_efficiency`` as used.
    - ``gradient_accumulation_steps``, ``max_micro_batch_per_gpu`` = ``max_batch_size_per_gpu``.
    - ``memory_gb_per_gpu`` = ``(weight+op_state+grad+act)_memory_per_gpu`` and
      ``memory_left_gb_per_gpu`` = ``memory_left_per_gpu`` (GiB; negative means it does not fit,
      which llm-analysis only warns about, so no error is raised).
    - ``latency_fwd_s`` = ``latency_fwd``: its roofline forward-pass estimate for one micro batch
      (with TP communication), reported but not part of ``step_time_s``.

    llm-analysis reports no MFU, so there is no ``mfu`` key. ``seconds`` is the wall time of this
    call. ``recompute`` is one of ``RECOMPUTE_MODES``; ``zero`` a DeepSpeed ZeRO stage 0-3;
    ``dtype`` / ``gpu`` as for ``run_llm_analysis`` (``fp8`` maps to ``w8a8e16``, timed at the GPU's
    ``peak_i8_TFLOPS``). Attention is counted with FlashAttention, Adam states with FP32 master
    weights, and a gated MLP as the equal-parameter two-matrix MLP (see ``_model_config``) for
    memory. Its FLOP count hard-codes the MLP at ``16 * tokens * hidden**2`` per layer (a ``4 *
    hidden`` MLP) whatever ``ffn_embed_dim`` is, so models with wider MLPs (Llama 3.1: SwiGLU 3 x
    3.5 * hidden, i.e. 21) are under-counted, and attention scores at the full ``4 * s**2 * hidden``
    per layer (no causal halving). Raises ValueError for inconsistent batch/parallel sizes or ``seq_len`` beyond the model's limit.
    """
    t0 = time.perf_counter()
    if chips != tp * pp * dp:
        raise ValueError(f"chips ({chips}) must equal tp * pp * dp ({tp} * {pp} * {dp})")
    if recompute.lower() not in RECOMPUTE_MODES:
        raise ValueError(f"unknown recompute {recompute!r}; one of {', '.join(RECOMPUTE_MODES)}")
    analysis_mod, config_mod = _load_peer()
    try:
        ds_zero = analysis_mod.DSZeRO(zero)
    except ValueError as exc:
        raise ValueError(f"zero must be a ZeRO stage 0-3, got {zero!r}") from exc
    recomputation = analysis_mod.ActivationRecomputation[RECOMPUTE_MODES[recompute.lower()]]
    model_config = _model_config(config_mod, model, hf_config)
    gpu_config = _named(config_mod.gpu_configs, GPU_ALIASES, gpu, "gpu")
    dtype_config = _named(config_mod.dtype_configs, DTYPE_ALIASES, dtype, "dtype")
    with _quiet_peer():
        try:
            peer = analysis_mod.LLMAnalysis(
                model_config,
                gpu_config,
                dtype_config,
                config_mod.ParallelismConfig(tp_size=tp, pp_size=pp, dp_size=dp),
                flops_efficiency=flops_efficiency,
                hbm_memory_efficiency=hbm_memory_efficiency,
            )
            summary: dict[str, Any] = peer.training(
                batch_size_per_gpu=micro_batch,
                global_batch_size=global_batch,
                seq_len=seq_len,
                activation_recomputation=recomputation,
                ds_zero=ds_zero,
            )
        except AssertionError as exc:
            raise ValueError(f"llm-analysis rejected the case: {exc}") from exc
    gib = float(1024**3)
    step_time = float(summary["latency_per_iter"])
    return {
        "step_time_s": step_time,
        "tokens_per_s": global_batch * seq_len / step_time,
        "achieved_tflops_per_gpu": float(summary["achieved_flops"]),
        "flops_efficiency": float(summary["flops_efficiency"]),
        "gradient_accumulation_steps": float(summary["gradient_accumulation_steps"]),
        "max_micro_batch_per_gpu": float(summary["max_batch_size_per_gpu"]),
        "memory_gb_per_gpu": float(summary["(weight+op_state+grad+act)_memory_per_gpu"]) / gib,
        "memory_left_gb_per_gpu": float(summary["memory_left_per_gpu"]) / gib,
        "latency_fwd_s": float(summary["latency_fwd"]),
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    if not peer_available():
        print(f"llm-analysis is not installed: pip install {PEER_REQUIREMENT}")
        return 1
    cases: list[dict[str, Any]] = [
        {"model": "llama-2-70b", "gpu": "h100-sxm-80gb", "tp": 2, "batch": 896, "dtype": "fp8"},
        {"model": "llama-2-70b", "gpu": "a100-sxm-80gb", "tp": 2, "batch": 1, "dtype": "bf16"},
        {
            "model": "upstage_Llama-2-70b-instruct-v2",
            "gpu": "h100-sxm-80gb",
            "tp": 2,
            "batch": 896,
            "dtype": "fp8",
        },
    ]
    for case in cases:
        try:
            out = run_llm_analysis(**case, input_len=222, output_len=290)
        except ValueError as exc:
            print(case, "->", exc)
            continue
        print(case, "->", {k: round(v, 6) for k, v in out.items()})
    training_cases: list[dict[str, Any]] = [
        {
            "model": "gpt3-175b",
            "gpu": "h100-sxm-80gb",
            "chips": 512,
            "tp": 4,
            "pp": 8,
            "dp": 16,
            "seq_len": 2048,
            "global_batch": 2048,
            "micro_batch": 2,
            "dtype": "bf16",
            "recompute": "selective",
        },
        {
            "model": "llama-3.1-8b",
            "gpu": "h100-sxm-80gb",
            "chips": 8,
            "tp": 1,
            "pp": 1,
            "dp": 8,
            "seq_len": 8192,
            "global_batch": 128,
            "micro_batch": 1,
            "dtype": "bf16",
        },
    ]
    for case in training_cases:
        try:
            out = run_llm_analysis_training(**case)
        except ValueError as exc:
            print(case, "->", exc)
            continue
        print(case, "->", {k: round(v, 6) for k, v in out.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
