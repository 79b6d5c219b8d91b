"""Models of the model catalog as PyTorch modules with example inputs, for `tapeout compile
--model ID` and the study: language models through Hugging Face transformers (`compiler.hf`),
recommendation models as the PyTorch DLRM (`compiler.dlrm`); random weights, on the meta device
unless the weights are wanted."""

from __future__ import annotations

from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.compiler.dlrm import dlrm, dlrm_inputs
from tapeout.errors import TapeoutError
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import get_model
from tapeout.workloads.recsys import RecsysConfig


def catalog_model(
    model_id: str, *, layers: int | None = None, batch: int = 1, seq: int = 128, meta: bool = True,
    first_layer_dense: bool = True,
) -> tuple[torch.nn.Module, tuple[Any, ...]]:  # fmt: skip
    """(module, example inputs) of a catalog model: an LLM keeps `layers` layers (default: all) and
    takes `batch` x `seq` token ids; a recommendation model takes `batch` samples.
    `first_layer_dense=False` makes every kept layer an expert layer where the model leads with
    dense ones (DeepSeek's first three), so a one-layer program shows the expert layer."""
    for name, value in (("layers", layers or 1), ("batch", batch), ("seq", seq)):
        if value < 1:
            raise TapeoutError(f"field '{name}': must be >= 1, got {value}")
    config = get_model(model_id).config
    if isinstance(config, LLMConfig):
        from tapeout.compiler.hf import causal_lm, token_ids

        if not first_layer_dense and config.first_k_dense_replace:
            config = config.model_copy(update={"first_k_dense_replace": 0})

        return causal_lm(config, layers=layers, meta=meta), (token_ids(config, batch, seq, meta=meta),)
    assert isinstance(config, RecsysConfig)
    if layers is not None:
        raise TapeoutError(f"field 'layers': {model_id} is a recommendation model; it has no layers to keep")
    return dlrm(config, meta=meta), dlrm_inputs(config, batch, meta=meta)
