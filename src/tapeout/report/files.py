"""Writing a page: never over an existing file unless told, and whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from tapeout.errors import TapeoutError


def write_page(path: Path, text: str, *, force: bool = False) -> int:
    """Write `text` to `path` (refusing to replace a file unless `force`); the bytes written."""
    if path.exists() and not force:
        raise TapeoutError(f"{path} exists; give --force to overwrite it")
    if path.exists() and path.is_dir():
        raise TapeoutError(f"{path} is a folder; give a file name ending in .html")
    data = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TapeoutError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(data)
