"""The model catalog: one YAML file per model under `catalog/`, looked up by exact id; any
Hugging Face `config.json` path and inline mappings load into the same typed configs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pydantic

from tapeout._yaml import deep_merge, load_data_file
from tapeout.errors import TapeoutError, from_validation, require_mapping, shown, unknown_id
from tapeout.workloads.llm import IGNORED_HF_KEYS, LLMConfig
from tapeout.workloads.recsys import RecsysConfig

CATALOG_DIR = Path(__file__).parent / "catalog"

# Hugging Face `model_type` -> our architecture.
MODEL_TYPES = {
    "llama": "llama", "mistral": "llama", "mixtral": "mixtral", "deepseek_v3": "deepseek_v3",
    "gpt2": "gpt", "gptj": "gpt", "gpt_neox": "gpt", "bert": "bert", "nemotron": "nemotron",
}  # fmt: skip
# GPT-2 / GPT-J spellings of the standard keys.
KEY_ALIASES = {
    "n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
    "n_inner": "intermediate_size", "n_positions": "max_position_embeddings",
    "num_experts": "num_local_experts",
}  # fmt: skip
_ENTRY_KEYS = {
    "id",
    "kind",
    "name",
    "source",
    "published_params",
    "published_params_source",
    "config",
    "notes",
}

ModelConfig = LLMConfig | RecsysConfig


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    kind: str  # "llm" or "recsys"
    name: str
    source: str
    published_params: int | None
    published_params_source: str | None
    config: ModelConfig

    def summary(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "params": self.config.param_count(),
            "published_params": self.published_params,
        }


def llm_from_mapping(
    data: Mapping[str, Any], origin: str | None = None, entry: str | None = None
) -> LLMConfig:
    """An `LLMConfig` from config.json keys; `model_type` or `architecture` names the family."""
    raw = {KEY_ALIASES.get(k, k): v for k, v in data.items() if k not in IGNORED_HF_KEYS}
    model_type = raw.pop("model_type", None)
    if model_type is not None and "architecture" not in raw:
        if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
            raise TapeoutError(
                f"{origin or ''}: {entry or ''}: field 'model_type': {shown(model_type)} is not supported; "
                f"known: {', '.join(sorted(MODEL_TYPES))}"
            )
        raw["architecture"] = MODEL_TYPES[model_type]
    if model_type == "gptj":
        raw.setdefault("attention_bias", False)
        raw.setdefault("parallel_attn", True)
        raw.setdefault("position_embedding_type", "rotary")
    if raw.get("intermediate_size") is None:
        raw.pop("intermediate_size", None)
    try:
        return LLMConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, entry, prefix="model") from None


def recsys_from_mapping(
    data: Mapping[str, Any], origin: str | None = None, entry: str | None = None
) -> RecsysConfig:
    try:
        return RecsysConfig.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise from_validation(exc, origin, entry, prefix="model") from None


def _entry_from_mapping(data: Mapping[str, Any], origin: str) -> ModelEntry:
    model_id = str(data.get("id", ""))
    unknown = sorted(set(data) - _ENTRY_KEYS)
    if unknown:
        raise TapeoutError(f"{origin}: {model_id}: unknown fields {', '.join(unknown)}")
    kind = data.get("kind")
    if kind not in ("llm", "recsys"):
        raise TapeoutError(f"{origin}: {model_id}: field 'kind': expected 'llm' or 'recsys', got {kind!r}")
    config_raw = require_mapping(data.get("config"), origin, model_id, "config")
    config: ModelConfig = (
        llm_from_mapping(config_raw, origin, model_id)
        if kind == "llm"
        else recsys_from_mapping(config_raw, origin, model_id)
    )
    published = data.get("published_params")
    if published is not None and (not isinstance(published, int) or published <= 0):
        raise TapeoutError(f"{origin}: {model_id}: field 'published_params': expected a positive integer")
    return ModelEntry(
        id=model_id,
        kind=kind,
        name=str(data.get("name", model_id)),
        source=str(data.get("source", "")),
        published_params=published,
        published_params_source=data.get("published_params_source"),
        config=config,
    )


@cache
def _raw_catalog() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        data = require_mapping(load_data_file(path), str(path), None, "<root>")
        if data.get("id") != path.stem:
            raise TapeoutError(f"{path}: id {data.get('id')!r} must match the file name {path.stem!r}")
        out[path.stem] = dict(data)
    return out


def model_ids() -> list[str]:
    return sorted(_raw_catalog())


@cache
def get_model(model_id: str) -> ModelEntry:
    """A catalog model by exact id.

    >>> get_model("llama-2-7b").config.num_hidden_layers
    32
    """
    raw = _raw_catalog()
    if model_id not in raw:
        raise unknown_id("model id", model_id, raw)
    return _entry_from_mapping(raw[model_id], str(CATALOG_DIR / f"{model_id}.yaml"))


def all_models() -> list[ModelEntry]:
    return [get_model(i) for i in model_ids()]


def load_config_json(path: Path) -> LLMConfig:
    data = require_mapping(load_data_file(path), str(path), None, "<root>")
    return llm_from_mapping(data, str(path), None)


def resolve_model(
    ref: str | Mapping[str, Any], origin: str | None = None, entry: str | None = None
) -> ModelConfig:
    """A catalog id, a path to a config.json, or a mapping: `{base: ID, key: value, ...}`
    overriding a catalog model's config keys, or a full config with `architecture:`."""
    if isinstance(ref, str):
        if ref.endswith(".json") or "/" in ref:
            return load_config_json(Path(ref))
        return get_model(ref).config
    if not isinstance(ref, Mapping):
        raise TapeoutError(f"{origin or ''}: {entry or ''}: field 'model': expected an id or a mapping")
    data = dict(ref)
    base = data.pop("base", None)
    if base is None:
        if "tables" in data:
            return recsys_from_mapping(data, origin, entry)
        if "architecture" not in data and "model_type" not in data:
            raise TapeoutError(
                f"{origin or ''}: {entry or ''}: field 'model': an inline model needs 'base' or 'architecture'"
            )
        return llm_from_mapping(data, origin, entry)
    if not isinstance(base, str):
        raise TapeoutError(f"{origin or ''}: {entry or ''}: field 'model.base': expected a catalog model id")
    raw = _raw_catalog()
    if base not in raw:
        raise unknown_id("model id", base, raw)
    merged = deep_merge(raw[base]["config"], data)
    if raw[base]["kind"] == "recsys":
        return recsys_from_mapping(merged, origin, entry)
    return llm_from_mapping(merged, origin, entry)
