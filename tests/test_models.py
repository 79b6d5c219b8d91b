import json

import pytest

from tapeout.errors import TapeoutError, UnknownIdError
from tapeout.workloads.llm import LLMConfig
from tapeout.workloads.models import all_models, get_model, load_config_json, model_ids, resolve_model
from tapeout.workloads.recsys import RecsysConfig

REQUIRED = [
    "gpt-j-6b",
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "mixtral-8x7b",
    "deepseek-v3",
    "gpt3-175b",
    "nemotron-4-340b",
    "bert-large",
    "dlrm-v2",
]


def test_catalog_has_every_required_model():
    assert set(REQUIRED) <= set(model_ids())


@pytest.mark.parametrize("model_id", REQUIRED)
def test_param_count_matches_published_total_within_1pct(model_id):
    entry = get_model(model_id)
    assert entry.published_params
    assert entry.config.param_count() == pytest.approx(entry.published_params, rel=0.01)


def test_llama_param_count_by_formula():
    c = get_model("llama-2-7b").config
    h, f, v, layers = 4096, 11008, 32000, 32
    per_layer = 4 * h * h + 3 * h * f + 2 * h
    assert c.param_count() == 2 * v * h + layers * per_layer + h


def test_moe_active_params():
    mixtral = get_model("mixtral-8x7b").config
    assert isinstance(mixtral, LLMConfig)
    assert mixtral.active_param_count() == pytest.approx(12.9e9, rel=0.01)
    ds = get_model("deepseek-v3").config
    assert isinstance(ds, LLMConfig)
    assert ds.is_mla
    assert ds.active_param_count() == pytest.approx(37e9, rel=0.03)


def test_config_json_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0,
        "torch_dtype": "bfloat16", "tie_word_embeddings": False,
    }))  # fmt: skip
    assert load_config_json(path).param_count() == get_model("llama-3.1-8b").config.param_count()


def test_bad_configs_name_the_field(tmp_path):
    with pytest.raises(TapeoutError, match="num_key_value_heads"):
        resolve_model({"base": "llama-2-7b", "num_key_value_heads": 5})
    with pytest.raises(TapeoutError, match=r"hidden_sise.*unknown field"):
        resolve_model({"base": "llama-2-7b", "hidden_sise": 5})
    with pytest.raises(TapeoutError, match="hidden_size"):
        resolve_model({"base": "llama-2-7b", "hidden_size": "big"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(TapeoutError, match=r"model_type.*known"):
        load_config_json(path)
    with pytest.raises(UnknownIdError, match=r"known: .*llama-2-7b"):
        get_model("llama-9")


def test_inline_models_as_the_schema_writes_them():
    gpt = resolve_model({"base": "gpt3-175b", "vocab_size": 51200})
    assert isinstance(gpt, LLMConfig)
    assert gpt.vocab_size == 51200
    full = resolve_model({"architecture": "gpt", "hidden_size": 4096, "num_hidden_layers": 36,
                          "num_attention_heads": 32, "vocab_size": 51200})  # fmt: skip
    assert isinstance(full, LLMConfig)
    assert full.ffn_size == 4 * 4096
    assert full.tied


def test_recsys_errors_list_what_is_valid():
    base = get_model("dlrm-v2").config
    assert isinstance(base, RecsysConfig)
    assert base.lookups_per_sample == 214
    with pytest.raises(TapeoutError, match="'dot', 'dcn' or 'transformer'"):
        resolve_model({"base": "dlrm-v2", "interaction": {"kind": "attention"}})
    with pytest.raises(TapeoutError, match=r"skew_alpha.*less than or equal to 3"):
        resolve_model({**base.model_dump(), "tables": [{"rows": 10, "dim": 128, "skew_alpha": 7}]})


def test_every_model_summarises():
    for m in all_models():
        assert m.summary()["params"] > 0
