"""Every data file a user names is read safely: regular files only, a size limit, UTF-8 text,
and YAML/JSON within the nesting and alias limits; each refusal names the file."""

import json
import os
import re
import time
from pathlib import Path

import pytest

from tapeout import _yaml
from tapeout._yaml import (
    MAX_ALIAS_NODES,
    MAX_ALIASES,
    MAX_FILE_MB_ENV,
    MAX_NESTING,
    load_data_file,
    max_file_mb,
    read_text_file,
    set_max_file_mb,
)
from tapeout.errors import TapeoutError
from tapeout.hardware.catalog import CATALOG_DIR
from tapeout.plan.demand import load_demand
from tapeout.sim.requests import Requests
from tapeout.validate import PUBLIC_CASES, load_cases

# Nine levels of nine aliases each: 9**9 (387 million) leaves once expanded.
ALIAS_BOMB = "\n".join(
    ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
)
# The same through merge keys, which the constructor copies level by level.
MERGE_BOMB = "m0: &m0 {a: 1, b: 2}\n" + "\n".join(
    f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}], k{i}: 1}}" for i in range(1, 10)
)


@pytest.fixture
def file_limit():
    """Lets a test set the size limit, and puts the default back afterwards."""
    yield set_max_file_mb
    set_max_file_mb(None)


@pytest.fixture(autouse=True)
def _no_limit_from_environment(monkeypatch):
    monkeypatch.delenv(MAX_FILE_MB_ENV, raising=False)


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _refused(path: Path, match: str) -> str:
    with pytest.raises(TapeoutError, match=match) as info:
        load_data_file(path)
    assert str(path) in str(info.value)
    return str(info.value)


# ---- ordinary files -------------------------------------------------------------------------
def test_ordinary_files_still_load(tmp_path):
    assert load_data_file(_write(tmp_path, "a.yaml", "a: 1\nb: [x, {c: 2.5}]\n")) == {
        "a": 1,
        "b": ["x", {"c": 2.5}],
    }
    assert load_data_file(_write(tmp_path, "a.json", '{"a": [1, {"b": null}]}')) == {"a": [1, {"b": None}]}
    shared = load_data_file(_write(tmp_path, "s.yaml", "base: &b {x: 1}\nuse: *b\nmerged: {<<: *b, y: 2}\n"))
    assert shared == {"base": {"x": 1}, "use": {"x": 1}, "merged": {"x": 1, "y": 2}}
    assert load_data_file(_write(tmp_path, "crlf.yaml", b"a: 1\r\nb: [1,\r\n  2]\r\n")) == {
        "a": 1,
        "b": [1, 2],
    }
    assert load_data_file(_write(tmp_path, "u.yaml", "name: café ✓\n")) == {"name": "café ✓"}
    assert load_data_file(_write(tmp_path, "empty.yaml", "")) is None


def test_bundled_files_load():
    assert len(load_data_file(PUBLIC_CASES)["cases"]) > 0
    assert all(isinstance(load_data_file(p), dict) for p in sorted(CATALOG_DIR.glob("*.yaml")))


def test_nesting_up_to_the_limit_loads(tmp_path):
    depth = MAX_NESTING
    assert load_data_file(_write(tmp_path, "d.yaml", "[" * depth + "]" * depth)) is not None
    assert load_data_file(_write(tmp_path, "d.json", "[" * depth + "]" * depth)) is not None
    anchored = "a: &a [1]\nb: " + "[" * (depth - 2) + "*a" + "]" * (depth - 2)
    assert load_data_file(_write(tmp_path, "e.yaml", anchored))["b"] is not None


def test_syntax_errors_keep_their_messages(tmp_path):
    _refused(_write(tmp_path, "x.yaml", "{unclosed"), "not valid YAML")
    _refused(_write(tmp_path, "x.json", "{oops"), "not valid JSON: Expecting property name")
    _refused(_write(tmp_path, "y.yaml", "a: &a 1\nb: *nope\n"), "not valid YAML: found undefined alias")
    _refused(_write(tmp_path, "z.yaml", "when: 2001-13-01\n"), "not valid YAML: month must be in 1..12")
    _refused(_write(tmp_path, "evil.yaml", "!!python/object/apply:os.system ['true']\n"), "not valid YAML")


def test_a_missing_file_is_not_found(tmp_path):
    _refused(tmp_path / "missing.yaml", "cannot read: file not found")


# ---- what is not a regular file ------------------------------------------------------------
def test_a_directory_is_refused(tmp_path):
    folder = tmp_path / "cases.yaml"
    folder.mkdir()
    _refused(folder, "is a directory, not a regular file")


def test_dev_zero_is_refused_without_reading(monkeypatch):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")

    def no_open(*args, **kwargs):
        raise AssertionError("/dev/zero was opened")

    monkeypatch.setattr(_yaml, "_open_nonblocking", no_open)
    _refused(Path("/dev/zero"), "is a character device, not a regular file")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "demand.yaml"
    os.mkfifo(fifo)
    _refused(fifo, r"is a FIFO \(named pipe\), not a regular file")


# ---- text only ----------------------------------------------------------------------------
def test_a_binary_file_is_refused(tmp_path):
    message = _refused(_write(tmp_path, "b.yaml", b"\x89PNG\r\n\x1a\n\x00\x00"), "not a text file")
    assert "(binary or not UTF-8): byte 0x89 at offset 0" in message


def test_latin1_text_is_refused(tmp_path):
    message = _refused(_write(tmp_path, "l.yaml", "name: café\n".encode("latin-1")), "not a text file")
    assert "byte 0xe9 at offset 9" in message


def test_a_nul_byte_is_refused(tmp_path):
    message = _refused(_write(tmp_path, "n.json", b'{"a": 1}\x00'), "not a text file")
    assert "byte 0x00 at offset 8" in message


def test_the_first_bad_byte_is_named(tmp_path):
    assert "at offset 2" in _refused(_write(tmp_path, "f.yaml", b"a:\xff\x00"), "not a text file")
    assert "byte 0x00 at offset 2" in _refused(_write(tmp_path, "g.yaml", b"a:\x00\xff"), "not a text")


# ---- size limit ---------------------------------------------------------------------------
def test_the_default_limit(file_limit):
    assert max_file_mb() == _yaml.DEFAULT_MAX_FILE_MB == 64.0
    file_limit(100)
    assert max_file_mb() == 100


def test_an_oversized_file_is_refused(tmp_path, file_limit):
    path = _write(tmp_path, "big.json", json.dumps(list(range(1000))))
    file_limit(0.001)
    message = _refused(path, "over the 0.001 MB limit for data files")
    assert "MB is over" in message and "--max-file-mb" in message and MAX_FILE_MB_ENV in message
    file_limit(1)
    assert len(load_data_file(path)) == 1000


def test_the_read_stops_past_the_limit(tmp_path, file_limit, monkeypatch):
    """A file that reports size 0 (as /proc files do) is read only to limit + 1 bytes."""
    path = _write(tmp_path, "grows.yaml", "a: 1\n" * 1000)
    real_stat = os.stat
    monkeypatch.setattr(
        _yaml.os, "stat", lambda p, **kw: os.stat_result((*real_stat(p)[:6], 0, *real_stat(p)[7:]))
    )
    file_limit(0.001)
    _refused(path, "more than 0.001 MB is over the 0.001 MB limit")


def test_the_limit_from_the_environment(tmp_path, monkeypatch):
    path = _write(tmp_path, "big.yaml", "a: 1\n" * 1000)
    monkeypatch.setenv(MAX_FILE_MB_ENV, "0.001")
    _refused(path, "over the 0.001 MB limit")
    monkeypatch.setenv(MAX_FILE_MB_ENV, "1")
    assert load_data_file(path) == {"a": 1}


def test_the_option_overrides_the_environment(tmp_path, monkeypatch, file_limit):
    path = _write(tmp_path, "big.yaml", "a: 1\n" * 1000)
    monkeypatch.setenv(MAX_FILE_MB_ENV, "0.001")
    file_limit(1)
    assert load_data_file(path) == {"a": 1}


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "lots", "1e999"])
def test_an_invalid_environment_limit_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv(MAX_FILE_MB_ENV, value)
    with pytest.raises(TapeoutError, match=f"{MAX_FILE_MB_ENV}: must be a positive, finite number of MB"):
        load_data_file(_write(tmp_path, "a.yaml", "a: 1\n"))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_an_invalid_option_limit_is_refused(file_limit, value):
    with pytest.raises(TapeoutError, match=r"--max-file-mb: must be a positive, finite number of MB, got"):
        file_limit(value)
    assert max_file_mb() == _yaml.DEFAULT_MAX_FILE_MB


# ---- YAML and JSON limits -----------------------------------------------------------------
@pytest.mark.parametrize("bomb", [ALIAS_BOMB, MERGE_BOMB], ids=["aliases", "merge-keys"])
def test_an_alias_bomb_is_refused_at_once(tmp_path, bomb):
    start = time.perf_counter()
    message = _refused(_write(tmp_path, "bomb.yaml", bomb), "YAML aliases would expand")
    assert time.perf_counter() - start < 0.2
    assert f"{MAX_ALIAS_NODES:,} nodes" in message


def test_too_many_aliases_are_refused(tmp_path):
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    _refused(_write(tmp_path, "many.yaml", text), f"more than the limit of {MAX_ALIASES:,} YAML aliases")


def test_an_alias_cycle_is_refused(tmp_path):
    _refused(
        _write(tmp_path, "cycle.yaml", "a: &a [1, *a]\n"), r"alias \*a refers to a node that contains it"
    )


@pytest.mark.parametrize(
    "text",
    [
        "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1),
        "- " * (MAX_NESTING + 1) + "x",
        "[" * 5000 + "]" * 5000,  # past libyaml's own stop
        "a: &a " + "[" * 60 + "1" + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50,  # through an alias
    ],
    ids=["flow", "block", "very-deep", "via-alias"],
)
def test_deep_yaml_is_refused(tmp_path, text):
    _refused(_write(tmp_path, "deep.yaml", text), f"nested deeper than the limit of {MAX_NESTING} levels")


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 100_000])
def test_deep_json_is_refused(tmp_path, depth):
    path = _write(tmp_path, "deep.json", '{"a": ' * depth + "1" + "}" * depth)
    _refused(path, f"nested deeper than the limit of {MAX_NESTING} levels")


# ---- the public entry points --------------------------------------------------------------
def test_load_cases_refuses_an_alias_bomb(tmp_path):
    path = _write(
        tmp_path,
        "cases.yaml",
        "schema: tapeout-validation/1\ncases:\n  - id: a\n    extra:\n"
        + "".join(f"      {line}\n" for line in ALIAS_BOMB.splitlines()),
    )
    with pytest.raises(TapeoutError, match="alias bomb") as info:
        load_cases(path)
    assert str(path) in str(info.value)


def test_load_demand_refuses_an_alias_bomb_and_binary(tmp_path):
    bomb = _write(
        tmp_path,
        "demand.yaml",
        "candidates: [{hardware: h100-sxm}]\ndemands:\n  - name: x\n    junk:\n"
        + "".join(f"      {line}\n" for line in ALIAS_BOMB.splitlines()),
    )
    with pytest.raises(TapeoutError, match="alias bomb") as info:
        load_demand(bomb)
    assert str(bomb) in str(info.value)
    binary = _write(tmp_path, "demand.json", b"\xff\xfe{}")
    with pytest.raises(TapeoutError, match="not a text file") as info:
        load_demand(binary)
    assert str(binary) in str(info.value)


def test_a_binary_trace_is_refused(tmp_path):
    for name in ("t.jsonl", "t.csv"):
        path = _write(tmp_path, name, b"arrival_s,input_len,output_len\n\x00\x01\x02\xff")
        with pytest.raises(TapeoutError, match=f"trace file {re.escape(str(path))}: not a text file"):
            Requests.from_trace(path)


def test_a_trace_that_is_not_a_file_or_too_big_is_refused(tmp_path, file_limit):
    with pytest.raises(TapeoutError, match=r"trace file .*: is a directory"):
        Requests.from_trace(tmp_path)
    with pytest.raises(TapeoutError, match=r"trace file .*missing\.jsonl: cannot read: file not found"):
        Requests.from_trace(tmp_path / "missing.jsonl")
    bomb = _write(tmp_path, "bomb.jsonl", ALIAS_BOMB)
    with pytest.raises(TapeoutError, match=f"trace file {re.escape(str(bomb))}, line 1: not valid JSON"):
        Requests.from_trace(bomb)
    rows = _write(tmp_path, "rows.jsonl", '{"arrival_s": 0, "input_len": 5, "output_len": 1}\n' * 100)
    file_limit(0.001)
    with pytest.raises(TapeoutError, match=f"trace file {re.escape(str(rows))}: .* over the 0.001 MB limit"):
        Requests.from_trace(rows)


def test_odd_trace_lines_are_refused(tmp_path):
    deep = _write(tmp_path, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(TapeoutError, match="line 1: not valid JSON"):
        Requests.from_trace(deep)
    wide = _write(tmp_path, "wide.csv", "arrival_s,input_len,output_len\n0,1," + "9" * 200_000 + "\n")
    with pytest.raises(TapeoutError, match="not valid CSV"):
        Requests.from_trace(wide)


def test_read_text_file_names_the_file_as_told(tmp_path):
    assert read_text_file(_write(tmp_path, "t.txt", "x\r\ny\n")) == "x\ny\n"
    with pytest.raises(TapeoutError, match=r"^my file: cannot read: file not found$"):
        read_text_file(tmp_path / "nope", "my file")
