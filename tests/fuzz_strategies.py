"""Hostile input for every loader and for the command line: strategies that mutate the real
examples (catalog chips, designs, models, the public cases, the demand example) with one to three
edits at any depth, each a number moved far from its value, a field replaced by an odd value,
deleted or added; files written from them, with characters edited, or any bytes; and command
lines with odd numbers and ids. Valid examples with one thing wrong reach much deeper into the
checks than random mappings do.

The properties they are checked against are in fuzz_properties.py; tests/test_fuzz.py runs them
in the unit tier, benchmarks/fuzz_inputs.py at 10,000 examples a loader.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from hypothesis import strategies as st

from tapeout._yaml import deep_merge, load_data_file
from tapeout.cases import PUBLIC_CASES
from tapeout.hardware import catalog
from tapeout.sim.requests import TRACE_COLUMNS
from tapeout.workloads import models

# ---- odd values ----------------------------------------------------------------------------
ODD_FLOATS = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e-300, 0.5, -1.0, 1e-9, 1e30]
ODD_INTS = [0, -1, 1, 2, 3, 2**31, 2**53 + 1, 2**63, 2**64, 2**70, -(2**70), 10**30, 10**400]
ODD_STRINGS = [
    "", " ", "[/red]", "[bold red]oops", "\x00", "café ✓", "\u202e", "a\nb", "x" * 10_000, "nan",
    "inf", "-inf", "1e308", "-1", "0", "1e-300", "null", "true", "{}", "[]", "../../etc/passwd",
    "%s%n{0}", "h100-sxm", "llama-2-7b", "fp8", "bf16", "int8", "fp4", "HBM3", "N5", "switch",
]  # fmt: skip


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(ODD_INTS),
        st.builds(pow, st.just(10), st.just(5000)),  # too long for Python to print
        st.integers(),
        st.sampled_from(ODD_FLOATS),
        st.floats(),
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=12),
    )


def mostly(
    good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], every: int = 5
) -> st.SearchStrategy[Any]:
    """`odd` one time in `every`, else `good` (`one_of` would flatten `odd`'s own branches and
    weight it by their number)."""
    return st.integers(1, every).flatmap(lambda i: odd if i == 1 else good)


def _keys() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=10), st.sampled_from(["id", "base", "name", "0"]), st.integers(-2, 2),
                     st.none(), st.booleans())  # fmt: skip


def _nested(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"a": leaf}
    return leaf


def json_values() -> st.SearchStrategy[Any]:
    """None, bools, numbers (0, -1, 2**70, nan, inf, -0.0, 1e308, 5e-324), strings (empty, rich
    markup, 10,000 characters), lists, mappings with odd keys, and deep nesting."""
    tree = st.recursive(
        scalars(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys(), inner, max_size=4),
        max_leaves=8,
    )
    deep = st.builds(_nested, st.sampled_from([20, 99, 150]), scalars())
    return st.one_of(tree, tree, tree, deep)


def _near(value: Any) -> st.SearchStrategy[Any]:
    """Values close to a real number: scaled far up or down, negated, off by a fraction, as text."""
    if not _is_number(value) or not abs(value) <= 1e300:  # not NaN, infinite or huge
        return st.just(value)
    return st.one_of(
        st.integers(-320, 300).map(lambda e: float(value) * 10.0**e),
        st.sampled_from([-value, value + 0.5, value - 1, str(value), float(value), int(value)]),
        st.integers(1, 40).map(lambda e: int(value) * 10**e),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---- mutating a real example -----------------------------------------------------------------
Path_ = tuple[Any, ...]


def _paths(node: Any, at: Path_ = ()) -> Iterator[Path_]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _get(node: Any, path: Path_) -> Any:
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated(draw: st.DrawFn, base: Any, edits: int = 3) -> Any:
    """`base` with one to `edits` edits: a number moved far from its value, a node replaced by an
    odd value, a field deleted, or a field added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, edits))):
        paths = [p for p in _paths(doc) if p]
        numbers = [p for p in paths if _is_number(_get(doc, p))]
        action = draw(st.sampled_from(["near", "near", "near", "replace", "replace", "delete", "add"]))
        if not paths:
            break
        path = draw(st.sampled_from(numbers if action == "near" and numbers else paths))
        parent, key = _get(doc, path[:-1]), path[-1]
        if action == "near":
            parent[key] = draw(_near(parent[key]))
        elif action == "replace":
            parent[key] = draw(json_values())
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(_keys())] = draw(json_values())
        else:
            parent.append(draw(json_values()))
    return doc


# ---- the examples --------------------------------------------------------------------------
def _plain(data: Any) -> Any:
    """A loaded file as plain dicts and lists (YAML gives both already; this copies)."""
    return json.loads(json.dumps(data))


CHIPS: dict[str, dict[str, Any]] = {k: _plain(v) for k, v in catalog._raw_catalog().items()}
DESIGNS: dict[str, dict[str, Any]] = {
    p.stem: _plain(load_data_file(p)) for p in sorted(catalog.DESIGNS_DIR.glob("*.yaml"))
}
MODELS: dict[str, dict[str, Any]] = {k: _plain(v) for k, v in models._raw_catalog().items()}
CASES: list[dict[str, Any]] = _plain(load_data_file(PUBLIC_CASES)["cases"])
DEMAND: dict[str, Any] = {
    "tco": {"years": 5, "usd_per_kwh": 0.08},
    "candidates": [
        {"hardware": "h20", "region": "CN"},
        {"hardware": "h200-sxm", "levy": 0.25},
        {"hardware": "h100-sxm", "price_usd": 25000, "max_chips": 50000},
        {"hardware": "tapeout-i1", "volume": 500000},
    ],
    "demands": [
        {"name": "chat", "kind": "serving", "model": "llama-3.1-70b", "precision": "fp8", "input_len": 1000,
         "output_len": 300, "ttft_limit_s": 2, "tpot_limit_s": 0.05, "tokens_per_s": 2.0e6},
        {"name": "cap", "kind": "serving", "model": "llama-3.1-70b", "input_len": 1000, "output_len": 300,
         "ttft_limit_s": 2.0, "tpot_limit_s": 0.05, "capacity_of": {"hardware": "h20", "chips": 200000}},
        {"name": "ranking", "kind": "recsys", "model": "dlrm-v2", "qps": 1.0e6, "latency_limit_s": 0.01},
        {"name": "pretrain", "kind": "training", "model": "llama-3.1-8b", "tokens": 1.0e12, "deadline_days": 30},
    ],
}  # fmt: skip


def chip_mappings() -> st.SearchStrategy[Any]:
    return st.sampled_from(sorted(CHIPS)).flatmap(lambda k: mutated(CHIPS[k]))


def design_mappings() -> st.SearchStrategy[Any]:
    return st.sampled_from(sorted(DESIGNS)).flatmap(lambda k: mutated(DESIGNS[k]))


def _override(data: Mapping[str, Any], key: str) -> st.SearchStrategy[dict[str, Any]]:
    """`{base: key, ...}`: the fields of `data` that a mutation changed or added."""

    def diff(new: Any) -> dict[str, Any]:
        out = {k: v for k, v in new.items() if k not in data or data[k] != v} if isinstance(new, dict) else {}
        return {"base": key, **out}

    return mutated(dict(data)).map(diff)


def chip_refs() -> st.SearchStrategy[Any]:
    """A catalog id, an odd id, `{base: ID, ...}` with fields changed, or something else."""
    overrides = st.sampled_from(sorted(CHIPS)).flatmap(lambda k: _override(CHIPS[k], k))
    return mostly(
        st.sampled_from(sorted(CHIPS)) | overrides | overrides, st.sampled_from(ODD_STRINGS) | json_values()
    )


def model_configs() -> st.SearchStrategy[Any]:
    """The config of a catalog language model, mutated: a config.json."""
    llms = sorted(k for k, v in MODELS.items() if v["kind"] == "llm")
    return st.sampled_from(llms).flatmap(lambda k: mutated(MODELS[k]["config"]))


def model_refs() -> st.SearchStrategy[Any]:
    """A catalog id, an odd id, `{base: ID, ...}` with config keys changed, a full config with
    `architecture:`, or something else."""
    configs = {k: v["config"] for k, v in MODELS.items()}
    overrides = st.sampled_from(sorted(configs)).flatmap(lambda k: _override(configs[k], k))
    full = st.sampled_from(sorted(configs)).flatmap(lambda k: mutated(configs[k]))
    good = st.sampled_from(sorted(configs)) | overrides | overrides | full
    return mostly(good, st.sampled_from(ODD_STRINGS) | json_values())


def case(case_id: str, **changes: Any) -> dict[str, Any]:
    """A public case with `changes` merged in (nested mappings merge): a regression example."""
    return deep_merge(next(c for c in CASES if c["id"] == case_id), changes)


@st.composite
def case_mappings(draw: st.DrawFn) -> Any:
    """A public case, its hardware or model perhaps swapped for `{base: ID, ...}` with fields
    changed, then mutated."""
    case = copy.deepcopy(draw(st.sampled_from(CASES)))
    hardware, model = case.get("hardware"), case.get("model")
    if isinstance(hardware, str) and hardware in CHIPS and draw(st.booleans()):
        case["hardware"] = draw(_override(CHIPS[hardware], hardware))
    if isinstance(model, str) and model in MODELS and draw(st.booleans()):
        case["model"] = draw(_override(MODELS[model]["config"], model))
    return draw(mutated(case)) if draw(st.booleans()) else case


def demand_mappings() -> st.SearchStrategy[Any]:
    return mutated(DEMAND, edits=4)


def cost_requests() -> st.SearchStrategy[tuple[Any, Any, Any, Any]]:
    """(chip, volume, region, levy) for `tapeout.cost.api.cost`: the chip a catalog id or a design
    file, the others in range, odd or missing."""
    chip = mostly(st.sampled_from(sorted(CHIPS)), files(design_mappings(), (".yaml", ".json")), 3)
    volume = mostly(st.none() | st.integers(1, 10**7), scalars())
    region = mostly(st.none() | st.sampled_from(["CN", "US", "XX"]), scalars())
    levy = mostly(st.just(0.0) | st.floats(0, 10), scalars())
    return st.tuples(chip, volume, region, levy)


# ---- files ---------------------------------------------------------------------------------
YAML_TOKENS = [
    "&a ", "*a", "<<: *a", "!!python/object/apply:os.system ['true']", "!!binary aGk=", "!!set {a}",
    "!!omap [a: 1]", "!!float .nan", ".inf", "-.inf", "0x7fffffffffffffffff", "2001-13-01", "2024-01-01",
    "? [a]\n: 1\n", "{", "[", "]", "}", "\t", "---\n", "...\n", "%YAML 1.1\n", "'", '"', "\\u0000",
    ": ", "- ", "\n  ", "#", "|\n", ">\n", "~", "null", "1e999", "[" * 120, "9" * 5000, "\ufeff",
]  # fmt: skip


@st.composite
def edited_text(draw: st.DrawFn, base: str) -> str:
    """`base` with a few characters inserted (YAML syntax, odd tokens), deleted or duplicated."""
    text = base
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        action = draw(st.sampled_from(["insert", "insert", "delete", "duplicate"]))
        if action == "insert":
            token = draw(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=5)))
            text = text[:i] + token + text[i:]
        elif action == "delete":
            text = text[:i] + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


def _dump(data: Any, suffix: str) -> str:
    if suffix == ".json":
        return json.dumps(data, default=str)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def files(
    documents: st.SearchStrategy[Any], suffixes: tuple[str, ...] = (".yaml", ".json")
) -> st.SearchStrategy[tuple[str, bytes]]:
    """(suffix, bytes): a mutated document written out, that text with characters edited, or
    any bytes."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bytes]:
        suffix = draw(st.sampled_from(suffixes))
        kind = draw(st.sampled_from(["document", "document", "edited", "edited", "bytes"]))
        if kind == "bytes":
            return suffix, draw(st.binary(max_size=200))
        try:
            text = _dump(draw(documents), suffix)
        except (TypeError, ValueError, yaml.YAMLError, RecursionError):  # keys or values JSON or YAML lack
            text = ""
        if kind == "edited":
            text = draw(edited_text(text))
        return suffix, text.encode("utf-8", "surrogatepass")

    return build()


def case_files() -> st.SearchStrategy[tuple[str, bytes]]:
    document = st.lists(case_mappings(), min_size=1, max_size=3).map(
        lambda cases: {"schema": "tapeout-validation/1", "cases": cases}
    )
    return files(st.one_of(document, mutated({"schema": "tapeout-validation/1", "cases": CASES[:2]})))


def _csv(rows: list[Any]) -> str:
    lines = [",".join(TRACE_COLUMNS)]
    for row in rows:
        cells = [row.get(c, "") for c in TRACE_COLUMNS] if isinstance(row, dict) else [row]
        lines.append(",".join(str(c) for c in cells))
    return "\n".join(lines) + "\n"


def _jsonl(rows: list[Any]) -> str:
    return "\n".join(json.dumps(row, default=str) for row in rows) + "\n"


def trace_files() -> st.SearchStrategy[tuple[str, bytes]]:
    """(suffix, bytes): requests with in-range fields, perhaps mutated, written as CSV or JSON
    lines, perhaps with characters edited; or any bytes."""
    row = st.fixed_dictionaries({
        "arrival_s": st.floats(0, 1e4), "input_len": st.integers(1, 5000), "output_len": st.integers(1, 5000),
    })  # fmt: skip
    rows = st.lists(row, min_size=1, max_size=5).flatmap(lambda rs: st.one_of(st.just(rs), mutated(rs)))
    suffix = st.sampled_from([".csv", ".jsonl", ".CSV", ".txt"])

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bytes]:
        end = draw(suffix)
        try:
            text = (_csv if end.lower() == ".csv" else _jsonl)(draw(rows))
        except ValueError:  # an integer too long for Python to print
            text = ""
        if draw(st.integers(0, 3)) == 0:
            text = draw(edited_text(text))
        return end, text.encode("utf-8", "surrogatepass")

    return st.one_of(build(), build(), build(), st.tuples(suffix, st.binary(max_size=100)))


def data_files() -> st.SearchStrategy[tuple[str, bytes]]:
    yamlish = st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=6)), max_size=12).map("".join)
    return st.one_of(
        files(json_values(), (".yaml", ".json", ".yml")),
        st.tuples(
            st.sampled_from([".yaml", ".json"]), yamlish.map(lambda t: t.encode("utf-8", "surrogatepass"))
        ),
        st.tuples(st.sampled_from([".yaml", ".json"]), st.binary(max_size=200)),
    )


# ---- the command line ------------------------------------------------------------------------
NUMBER_TEXT = ["1e308", "inf", "-inf", "nan", "-0", "0", "1e-300", " 5", "5x", "", "1", "2", "8", "0.5",
               "-1", "1e3", "99999999999999999999999", str(2**63), "0x10", "1_000", "+3", "٣"]  # fmt: skip


def number_text() -> st.SearchStrategy[str]:
    """A number as text: half the time a plausible one (1 to 64, or 0.001 to 100), else odd."""
    plausible = st.integers(1, 64).map(str) | st.floats(0.001, 100).map(lambda x: f"{x:.3g}")
    odd = st.one_of(
        st.sampled_from(NUMBER_TEXT),
        st.integers(-(10**25), 10**25).map(str),
        st.integers(-3, 10**6).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    return mostly(plausible, odd, 2)


def odd_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(ODD_STRINGS[1:]), st.text(min_size=1, max_size=30))


SMALL = ["--input-len", "64", "--output-len", "8", "--requests", "4", "--max-seconds", "2"]
# Each command: its arguments, the numeric options a draw may set, and the other options and flags.
COMMANDS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "serve": (
        ["serve", "llama-2-7b", "--hardware", "h100-sxm", "--chips", "1", *SMALL],
        ["--chips", "--input-len", "--output-len", "--rate", "--requests", "--max-batch", "--max-tokens",
         "--ttft-limit", "--tpot-limit", "--max-seconds", "--tp", "--pp", "--ep"],
        ["--allow-long-context", "--trace={trace}", "--policy=disaggregated", "--precision=fp8",
         "--kv-precision=fp8", "--software=trt-llm@0.17", "--software=Bad Name", "--software=nemo",
         "--software=x@", "--software=launch"],
    ),
    "train": (
        ["train", "llama-3.1-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len", "2048",
         "--global-batch", "64", "--max-seconds", "2"],
        ["--chips", "--seq-len", "--global-batch", "--chips-per-node", "--tp", "--pp", "--dp", "--cp", "--ep",
         "--vpp", "--micro-batch", "--zero", "--zero-shard", "--budget", "--max-seconds"],
        ["--allow-long-context", "--search", "--sequence-parallel", "--recompute=full", "--precision=fp8",
         "--software=megatron-lm@2021", "--software=vllm", "--software=[/red]"],
    ),
    "recsys": (
        ["recsys", "dlrm-v2", "--hardware", "h100-sxm", "--chips", "8"],
        ["--chips", "--batch", "--pairs-per-sample", "--latency-limit"],
        ["--train", "--sharding=table", "--sharding=row", "--precision=fp8", "--software=hugectr",
         "--software=sglang"],
    ),
    "cost": (["cost", "tapeout-i1"], ["--volume", "--levy"], ["--region=CN", "--hardware=h100-sxm"]),
    "plan": (["plan", "{demand}"], ["--workers"], []),
    "validate": (["validate", "{cases}"], [], ["--software=mature", "--software=no-such", "--software=@"]),
    "hardware": (["hardware", "show", "h100-sxm"], [], []),
    "maturity": (["maturity"], ["--share"], []),
    "models": (["models", "show", "llama-2-7b"], [], []),
}  # fmt: skip
# Small files the commands read, written once into the scratch folder.
COMMAND_FILES = {
    "demand": "candidates: [{hardware: h100-sxm}]\n"
    "demands: [{kind: recsys, name: r, model: dlrm-v2, qps: 1000, latency_limit_s: 0.01}]\n",
    "cases": "schema: tapeout-validation/1\ncases:\n"
    + yaml.safe_dump([c for c in CASES if c["kind"] == "gemm"][:2]),
    "trace": "arrival_s,input_len,output_len\n0,64,8\n0.5,100,4\n1,32,16\n",
}
SUFFIXES = {"demand": ".yaml", "cases": ".yaml", "trace": ".csv"}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command with one to three of its numeric options set to odd text, perhaps a flag, the
    global file-size limit set, or an odd id."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    base, numeric, other = COMMANDS[name]
    args = list(base)
    if numeric and draw(st.integers(0, 4)):
        for option in draw(st.lists(st.sampled_from(numeric), min_size=1, max_size=3, unique=True)):
            args += [option, draw(number_text())]
    elif draw(st.booleans()):
        args = ["--max-file-mb", draw(number_text()), *args]
    else:
        position = 2 if name in ("hardware", "models") else 1
        if position < len(args):
            args[position] = draw(odd_ids())
        else:  # a command without a positional argument: a stray one
            args.append(draw(odd_ids()))
    if other and draw(st.booleans()):
        args.append(draw(st.sampled_from(other)))
    if draw(st.booleans()):
        args.append("--json")
    return args
