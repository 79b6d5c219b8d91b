"""Writing a calibration file: the file in force with fitted values in place of its entries, its
comments and layout kept, checked as any calibration file is when read, and written atomically to
a path the user names (never the package's own file, the case file, or a file that is not a
calibration file)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError
from tapeout.perf.calibration import CALIBRATION_FILE, ENV_VAR, SCHEMA, active_file, parse_table, reload


def check_target(path: Path, cases: Path | None = None) -> Path:
    """Where a calibration file may be written: anywhere but over the package's own file, the
    case file, or an existing file that is not a calibration file. Returns it absolute."""
    if str(path).startswith("-"):  # `--write --json` would otherwise write a file named --json
        raise TapeoutError(f"--write needs the PATH of the calibration file to write; got {str(path)!r}")
    if path.suffix == ".json":  # the loader would read it as JSON
        raise TapeoutError(f"{path}: a calibration file is written as YAML; name a .yaml file")
    target = path.expanduser().resolve()
    if _same_file(target, CALIBRATION_FILE):
        raise TapeoutError(
            f"{path}: this is the package's own calibration file ({CALIBRATION_FILE}), which is never "
            f"rewritten: give a path of your own and use it with --calibration PATH or {ENV_VAR}=PATH "
            "(the shipped figures change only by editing that file by hand)"
        )
    if cases is not None and _same_file(target, cases):
        raise TapeoutError(f"{path}: this is the case file the figures are fitted on")
    if not target.parent.is_dir():
        raise TapeoutError(f"{path}: directory {target.parent} does not exist")
    if target.is_dir():
        raise TapeoutError(f"{path}: is a directory; give the path of a file")
    if target.exists():
        try:
            data = load_data_file(target)
        except TapeoutError:
            data = None
        if not (isinstance(data, Mapping) and data.get("schema") == SCHEMA):
            raise TapeoutError(f"{path}: exists and is not a calibration file ({SCHEMA}); not replacing it")
    return target


def _same_file(a: Path, b: Path) -> bool:
    """Also through links: a hard link to the package's file is the package's file."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def write_calibration(
    values: Mapping[tuple[str, str], float], path: Path, *, cases: Path | None = None
) -> Path:
    """Write the calibration file in force, with `values` ((figure, stack) -> value) in place
    of its entries and its comments and layout kept, to `path`: checked in full first, then
    atomically. Returns the absolute path written."""
    target = check_target(path, cases)
    source = active_file()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise TapeoutError(f"{source}: cannot read: {exc.strerror}") from exc
    values = _carried(text, values)
    text = _replace_values(text, values)
    _check_fit(text, values, f"{target} (not written)")
    _atomic_write(target, text)
    if _same_file(target, active_file()):
        reload()  # the figures in force were the ones just replaced
    return target


def _carried(text: str, values: Mapping[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """The fitted values the file has an entry for. A joint fit also yields its partner figure
    for the stack (attention's overhead blocks for CUDA); where the file gives that stack no
    entry of its own, the stack takes the default figure, and so does the written file."""
    data = yaml.safe_load(text)
    figures = data.get("figures") if isinstance(data, Mapping) else None
    if not isinstance(figures, Mapping):
        return dict(values)
    return {
        (fig, stack): v
        for (fig, stack), v in values.items()
        if not isinstance(figures.get(fig), Mapping) or stack in figures[fig]
    }


def _replace_values(text: str, values: Mapping[tuple[str, str], float]) -> str:
    """Each `    stack: {value: X, ...}` entry of a fitted figure with its new value."""
    lines = text.splitlines(keepends=True)
    figure = None
    for i, line in enumerate(lines):
        top = re.match(r"^  ([a-z0-9_]+):\s*$", line)
        if top:
            figure = top.group(1)
            continue
        entry = re.match(r"^    ([a-z0-9][a-z0-9_.@+-]*): \{value: ([0-9.]+)(.*)$", line)
        if figure and entry and (figure, entry.group(1)) in values:
            value = values[(figure, entry.group(1))]
            lines[i] = f"    {entry.group(1)}: {{value: {value:.3f}{entry.group(3)}\n"
    return "".join(lines)


def _check_fit(text: str, values: Mapping[tuple[str, str], float], origin: str) -> None:
    """The text about to be written parses, passes every check a calibration file must, and
    holds each fitted value (an entry in a layout `_replace_values` does not know is refused,
    not dropped)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TapeoutError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise TapeoutError(f"{origin}: expected a mapping")
    parse_table(data, origin)
    for (figure, stack), value in values.items():
        entry = data["figures"][figure].get(stack)
        held = entry.get("value") if isinstance(entry, Mapping) else None
        if not isinstance(held, int | float) or abs(held - round(value, 3)) > 1e-9:
            raise TapeoutError(
                f"{origin}: figures.{figure}.{stack}: the file in force has no one-line "
                f"'{stack}: {{value: ...}}' entry to hold the fitted {value:.3f}"
            )


def _atomic_write(target: Path, text: str) -> None:
    """All or nothing: the text goes to a temporary file beside `target`, reaches the disk, then
    takes `target`'s name in one rename; a failure anywhere leaves `target` as it was."""
    try:
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise TapeoutError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it private; keep the mode of the file it replaces
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise TapeoutError(f"{target}: cannot write: {exc.strerror or exc}") from exc
        raise
    _sync_directory(target.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; where a directory cannot be opened (not POSIX), skip."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
