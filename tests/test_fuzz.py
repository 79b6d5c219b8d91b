"""Whatever the input, every loader succeeds or raises TapeoutError, and the command line exits 0 or
2 with no traceback and JSON without NaN or Infinity: the properties of fuzz_properties.py over
inputs from fuzz_strategies.py (real examples mutated, files with characters edited, odd numbers
on the command line): 60 examples a loader and 30 for the case predictions and the command line,
derandomized so that a run repeats. The `@example`s are inputs that once broke the contract.
benchmarks/fuzz_inputs.py runs 10,000 a loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

import fuzz_properties as fp
import fuzz_strategies as fs

LOADER = settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
HEAVY = settings(LOADER, max_examples=30)
SERVE = ["serve", "llama-2-7b", "--hardware", "h100-sxm", "--chips", "1", "--requests", "4",
         "--max-seconds", "2"]  # fmt: skip
TRAIN = ["train", "llama-3.1-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len", "2048",
         "--global-batch", "64"]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def holds(name: str, folder: Path, value: Any) -> None:
    prop = fp.PROPERTIES[name]
    with fp.time_limit(prop.seconds):
        assert prop.check(folder, value) in ("ok", "refused")


@LOADER
@given(value=fp.PROPERTIES["chip mapping"].strategy)
def test_chip_mapping(folder, value):
    holds("chip mapping", folder, value)


# A memory of a few bytes a second left the die model no memory interface.
@example(value={"base": "ascend-910b", "memory": {"bandwidth_gb_s": 1.6e-55}})
@LOADER
@given(value=fp.PROPERTIES["chip reference"].strategy)
def test_chip_reference(folder, value):
    holds("chip reference", folder, value)


@LOADER
@given(value=fp.PROPERTIES["chip file"].strategy)
def test_chip_file(folder, value):
    holds("chip file", folder, value)


@LOADER
@given(value=fp.PROPERTIES["design mapping"].strategy)
def test_design_mapping(folder, value):
    holds("design mapping", folder, value)


# Numbers Python cannot turn into a float, or print.
@example(value=("h100-sxm", None, None, 10**400))
@example(value=("tapeout-i1", 10**400, None, 0.0))
@example(value=("h100-sxm", None, 10**5000, 0.0))
@LOADER
@given(value=fp.PROPERTIES["design file, cost"].strategy)
def test_design_file_and_cost(folder, value):
    holds("design file, cost", folder, value)


# An unhashable model_type; 8e10 layers, whose parameters are summed layer by layer.
@example(value={"base": "llama-2-7b", "model_type": []})
@example(value={"base": "llama-3.1-70b", "num_hidden_layers": 80_000_000_000})
@LOADER
@given(value=fp.PROPERTIES["model reference"].strategy)
def test_model_reference(folder, value):
    holds("model reference", folder, value)


@LOADER
@given(value=fp.PROPERTIES["config.json"].strategy)
def test_config_json(folder, value):
    holds("config.json", folder, value)


# tp 0 divided the chips before the plan checked it.
@example(value=fs.case("train-megatron-sc21-gpt1p7b-a100x32", params={"tp": 0}))
@LOADER
@given(value=fp.PROPERTIES["case mapping"].strategy)
def test_case_mapping(folder, value):
    holds("case mapping", folder, value)


DLRM_GH200, LLAMA_H100 = "inf-mlperf41-dlrmv2-gh200-x1-offline", "inf-mlperf41-llama2-70b-h100x8-offline"
MIXTRAL, GPT_1P7B = "inf-mlperf41-mixtral-h200x8-offline", "train-megatron-sc21-gpt1p7b-a100x32"
ONE_LAYER = {"base": "llama-3.1-8b", "num_hidden_layers": 1}


# A sequence of 2e30 tokens, whose attention is costed block by block; the requests of a batch of
# 3e16 allocated at once; six million decode steps simulated; a placement slot per chip of 6.4e12;
# a vocabulary smaller than tp; denormal bytes, peaks and pairs that made a throughput of zero or
# infinity; a hidden size past the largest float.
@example(value=fs.case("train-korthikanti-530b-a100x280", params={"seq_len": 2 * 10**30}))
@example(value=fs.case(MIXTRAL, params={"batch": 30_720_000_000_000_000}))
@example(value=fs.case("inf-trtllm017-llama31-8b-a100-128-128", model=ONE_LAYER, params={"output_len": 3e6}))
@example(value=fs.case("train-mlperf40-dlrm-a100x64", chips=6_400_000_000_000))
@example(value=fs.case("train-megatron-sc21-gpt3p6b-a100x64", model={"vocab_size": 1}))
@example(value=fs.case("comm-allreduce-h200x8-ring-16g", params={"bytes": 5e-324}))
@example(value=fs.case(DLRM_GH200, hardware={"base": "gh200", "vector_fp32_tflops": 6.7e-314}))
@example(value=fs.case("inf-mlperf41-dlrmv2-h100x8-offline", params={"pairs_per_sample": 5e-324}))
@example(value=fs.case(GPT_1P7B, network={"scale_out_gbit_s_per_chip": 5e-324}))
@example(value=fs.case(LLAMA_H100, model={"base": "llama-2-70b", "hidden_size": 10**400}))
@HEAVY
@given(value=fp.PROPERTIES["case prediction"].strategy)
def test_case_prediction(folder, value):
    holds("case prediction", folder, value)


# YAML keys that are not strings, next to ones that are.
@example(value=(".yaml", b"schema: tapeout-validation/1\ncases: []\n1: x\nextra: y\n"))
@LOADER
@given(value=fp.PROPERTIES["case file"].strategy)
def test_case_file(folder, value):
    holds("case file", folder, value)


# An integer past the largest float.
@example(value=(".jsonl", b'{"arrival_s": 0, "input_len": 1' + b"0" * 400 + b', "output_len": 1}\n'))
@LOADER
@given(value=fp.PROPERTIES["trace"].strategy)
def test_trace(folder, value):
    holds("trace", folder, value)


@LOADER
@given(value=fp.PROPERTIES["demand mapping"].strategy)
def test_demand_mapping(folder, value):
    holds("demand mapping", folder, value)


@LOADER
@given(value=fp.PROPERTIES["demand file"].strategy)
def test_demand_file(folder, value):
    holds("demand file", folder, value)


@LOADER
@given(value=fp.PROPERTIES["data file"].strategy)
def test_data_file(folder, value):
    holds("data file", folder, value)


# A file-size limit of 1e308 MB in bytes; lengths past int64 (garbage lengths, then a division by
# zero in the estimate of the run); the training table printed a plan field the result left out.
@example(value=["--max-file-mb", "1e308", "validate", "{cases}"])
@example(value=[*SERVE, "--input-len", "1e30", "--allow-long-context", "--json"])
@example(value=[*SERVE, "--rate", "1e3", "--input-len", "1e127", "--output-len", "1e127"])
@example(value=[*TRAIN, "--zero", "1"])
@HEAVY
@given(value=fp.PROPERTIES["command line"].strategy)
def test_command_line(folder, value):
    holds("command line", folder, value)
