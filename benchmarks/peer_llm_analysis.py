"""Peer predictor: the PyPI package llm-analysis (github.com/cli99/llm-analysis) for LLM inference.

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
}
"""Hugging Face ``config.json`` keys (meta-llama/*-hf) for the models named by our ids."""

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
