"""Safe loading of data files and the one merge rule for `base:` overrides.

Every file a user names is read through `read_text_file`: a regular file only (never a
directory, device, FIFO or socket), at most `max_file_mb()` MB of it, and UTF-8 text without NUL
bytes. YAML is then checked for alias bombs, alias cycles and deep nesting before it is built,
and JSON for deep nesting; each refusal is a `TapeoutError` that names the file and the limit.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import Any

import yaml

from tapeout.errors import TapeoutError

# libyaml's safe loader when PyYAML was built with it: the same objects, ten times faster.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Largest data file read, in MB (2**20 bytes). Case, demand, catalog and trace files are a few
# hundred kB; 64 MB leaves room for large traces while keeping a mistaken path (a disk image, a
# log, /dev/zero behind a symlink) from filling memory. Raised with --max-file-mb or this variable.
DEFAULT_MAX_FILE_MB = 64.0
MAX_FILE_MB_ENV = "TAPEOUT_MAX_FILE_MB"
_BYTES_PER_MB = 1 << 20
# The largest limit that may be set, in MB: a terabyte, past any data file (and its bytes an integer).
MAX_FILE_MB_LIMIT = float(1 << 20)

# Deepest nesting of mappings and sequences. Real files nest under ten levels; the checks and
# merges that walk a file recurse, so a deeper one is refused before it reaches them.
MAX_NESTING = 100
# YAML aliases share one object, but validation walks the expanded tree: a few lines of nested
# anchors ("billion laughs") expand to billions of nodes. These bound what aliases may add.
MAX_ALIASES = 10_000
MAX_ALIAS_NODES = 1_000_000

# The limit set by `set_max_file_mb` (the --max-file-mb option); None: the variable or default.
_max_file_mb_option: float | None = None


def _positive_mb(value: float, source: str) -> float:
    if not (math.isfinite(value) and 0 < value <= MAX_FILE_MB_LIMIT):
        raise TapeoutError(
            f"{source}: must be a positive, finite number of MB, got {value!r} (at most {MAX_FILE_MB_LIMIT:,.0f})"
        )
    return value


def set_max_file_mb(mb: float | None) -> None:
    """Set the data-file size limit in MB (the --max-file-mb option); it overrides
    TAPEOUT_MAX_FILE_MB. None goes back to the variable or the default."""
    global _max_file_mb_option
    _max_file_mb_option = None if mb is None else _positive_mb(float(mb), "--max-file-mb")


def max_file_mb() -> float:
    """The data-file size limit in force, in MB: --max-file-mb, else TAPEOUT_MAX_FILE_MB, else 64."""
    if _max_file_mb_option is not None:
        return _max_file_mb_option
    raw = os.environ.get(MAX_FILE_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_FILE_MB
    try:
        value = float(raw)
    except ValueError:
        raise TapeoutError(
            f"{MAX_FILE_MB_ENV}: must be a positive, finite number of MB, got {raw!r}"
        ) from None
    return _positive_mb(value, MAX_FILE_MB_ENV)


# ---- reading the bytes ---------------------------------------------------------------------
_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _require_regular(mode: int, where: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
    raise TapeoutError(f"{where}: is {kind}, not a regular file")


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / _BYTES_PER_MB:.4g}"


def _too_big(where: str, limit_mb: float, size: int | None) -> TapeoutError:
    size_text = f"{_mb(size)} MB" if size is not None else f"more than {limit_mb:g} MB"
    return TapeoutError(
        f"{where}: {size_text} is over the {limit_mb:g} MB limit for data files; "
        f"raise it with --max-file-mb or {MAX_FILE_MB_ENV}"
    )


def _open_nonblocking(name: str, flags: int) -> int:
    # A FIFO swapped in after the stat check must not block the open.
    return os.open(name, flags | getattr(os, "O_NONBLOCK", 0))


def _read_at_most(f: FileIO, first: int, limit: int) -> bytes:
    """At most limit + 1 bytes: enough to tell a file is over the limit without reading all of it
    (a file's size can change after the stat, and /proc files report size 0)."""
    chunks: list[bytes] = []
    total, want = 0, first
    while total <= limit:
        chunk = f.read(min(want, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = _BYTES_PER_MB
    return b"".join(chunks)


def _read_bytes(path: Path, where: str) -> bytes:
    limit_mb = max_file_mb()
    limit = int(limit_mb * _BYTES_PER_MB)
    try:
        info = os.stat(path)
        _require_regular(info.st_mode, where)  # before opening: /dev/zero never ends, a FIFO blocks
        if info.st_size > limit:
            raise _too_big(where, limit_mb, info.st_size)
        with open(path, "rb", buffering=0, opener=_open_nonblocking) as f:
            _require_regular(os.fstat(f.fileno()).st_mode, where)  # the path may have been swapped
            data = _read_at_most(f, min(info.st_size, limit) + 1, limit)
    except FileNotFoundError:
        raise TapeoutError(f"{where}: cannot read: file not found") from None
    except OSError as exc:
        raise TapeoutError(f"{where}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise _too_big(where, limit_mb, None)
    return data


def _decode_text(data: bytes, where: str) -> str:
    """UTF-8 text without NUL bytes, with line ends as `Path.read_text` gives them."""
    bad = data.find(b"\x00")
    try:
        text = data.decode("utf-8") if bad < 0 else data[:bad].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    if bad >= 0:
        raise TapeoutError(
            f"{where}: not a text file (binary or not UTF-8): byte 0x{data[bad]:02x} at offset {bad}"
        )
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def read_text_file(path: Path, where: str | None = None) -> str:
    """The text of a data file the user gave, checked: a regular file, within the size limit,
    UTF-8 without NUL bytes. Errors start with `where` (default: the path as given)."""
    where = str(path) if where is None else where
    return _decode_text(_read_bytes(path, where), where)


# ---- nesting and alias limits --------------------------------------------------------------
_CONTAINERS = (dict, list, tuple)  # tuples: the pairs of a YAML !!omap


def _too_deep(where: str) -> TapeoutError:
    return TapeoutError(f"{where}: nested deeper than the limit of {MAX_NESTING} levels")


def _check_depth(data: Any, where: str) -> None:
    """Nesting of a loaded tree with no shared parts (JSON, YAML without anchors), walked
    without recursion; the top mapping or sequence is level 1."""
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, _CONTAINERS) else []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _too_deep(where)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, _CONTAINERS))


@dataclass(slots=True)
class _Open:
    """A mapping or sequence being parsed."""

    level: int  # its own nesting level, 1 at the top
    nodes_before: int  # expanded nodes counted before it began
    anchor: str | None
    deepest: int  # deepest level reached inside it, through aliases too


class _AliasBudget:
    """Counts, event by event, the nodes and nesting a YAML document would have with every alias
    expanded: an alias adds the node count and height of its anchor's subtree."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
        self.open: list[_Open] = []
        self.nodes = self.added = self.aliases = 0

    def scalar(self, anchor: str | None) -> None:
        self.nodes += 1
        if anchor is not None:
            self.anchors[anchor] = (1, 0)

    def start(self, anchor: str | None) -> None:
        level = len(self.open) + 1
        if level > MAX_NESTING:
            raise _too_deep(self.where)
        self.open.append(_Open(level, self.nodes, anchor, level))
        self.nodes += 1

    def end(self) -> None:
        done = self.open.pop()
        if done.anchor is not None:
            self.anchors[done.anchor] = (self.nodes - done.nodes_before, done.deepest - done.level + 1)
        if self.open:
            self.open[-1].deepest = max(self.open[-1].deepest, done.deepest)

    def alias(self, anchor: str) -> None:
        if any(o.anchor == anchor for o in self.open):
            raise TapeoutError(f"{self.where}: YAML alias *{anchor} refers to a node that contains it")
        nodes, height = self.anchors.get(anchor, (1, 0))  # undefined: the loader reports it
        reach = len(self.open) + height
        if reach > MAX_NESTING:
            raise _too_deep(self.where)
        if self.open:
            self.open[-1].deepest = max(self.open[-1].deepest, reach)
        self.aliases += 1
        self.nodes += nodes
        self.added += nodes
        if self.aliases > MAX_ALIASES:
            raise TapeoutError(f"{self.where}: more than the limit of {MAX_ALIASES:,} YAML aliases")
        if self.added > MAX_ALIAS_NODES:
            raise TapeoutError(
                f"{self.where}: YAML aliases would expand to more than the limit of "
                f"{MAX_ALIAS_NODES:,} nodes (an alias bomb)"
            )


def _check_yaml_events(text: str, where: str) -> None:
    """Refuse alias bombs, alias cycles and deep nesting from libyaml's event stream, before any
    object is built. A syntax error ends the scan quietly: the loader reports it, as before."""
    budget = _AliasBudget(where)
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            if isinstance(event, yaml.ScalarEvent):
                budget.scalar(event.anchor)
            elif isinstance(event, yaml.AliasEvent):
                budget.alias(str(event.anchor))  # an alias always names its anchor
            elif isinstance(event, yaml.CollectionStartEvent):
                budget.start(event.anchor)
            elif isinstance(event, yaml.CollectionEndEvent):
                budget.end()
            elif isinstance(event, yaml.DocumentStartEvent):
                budget.anchors.clear()  # anchors are scoped to their document
    except yaml.YAMLError as exc:
        # libyaml's scanner stops at 1,000 levels, sometimes before the 101st level's event.
        if "exceeded maximum nesting depth" in str(exc):
            raise _too_deep(where) from None


# ---- parsing -------------------------------------------------------------------------------
def _not_valid(path: Path, exc: Exception) -> TapeoutError:
    return TapeoutError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}")


def _load_yaml(text: str, path: Path) -> Any:
    # Without an anchor no alias can resolve, so only nesting needs checking, and that is cheaper
    # on the loaded tree than in a second pass over the events: plain files keep libyaml's speed.
    anchored = "&" in text
    if anchored:
        _check_yaml_events(text, str(path))
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # libyaml stops at 1,000 levels and the pure-Python composer recurses: name our limit.
        if not anchored:
            _check_yaml_events(text, str(path))
        raise _not_valid(path, exc) from exc
    if not anchored:
        _check_depth(data, str(path))
    return data


def _load_json(text: str, path: Path) -> Any:
    try:
        data = json.loads(text)
    except RecursionError:
        raise _too_deep(str(path)) from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise _not_valid(path, exc) from exc
    _check_depth(data, str(path))
    return data


def load_data_file(path: Path) -> Any:
    """Parse a YAML or JSON file with safe loaders only, within the file, nesting and alias
    limits; errors name the file."""
    text = read_text_file(path)
    return _load_json(text, path) if path.suffix == ".json" else _load_yaml(text, path)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
