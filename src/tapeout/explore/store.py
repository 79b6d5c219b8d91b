"""The results store: a folder of Parquet files, one per finished batch of designs, and a manifest
naming the space and the model version they belong to.

    DIR/manifest.json        schema, space hash, model version, the knobs, the space file
    DIR/part-<hash>.parquet  a batch: index, key, knob.<name>..., metric.<name>..., feasible, reason

Parquet, through pyarrow, because each batch is an immutable file: written to a temporary name,
flushed, then renamed into place, so a sweep killed at any moment leaves only whole batches (a
half-written file keeps its temporary name and is removed on the next run); any tool (pandas,
DuckDB, Spark) reads the folder as one table. A database file would need its own journal to
survive a kill, and a single writer.

Every part carries the space hash and the model version in its metadata too; a store of another
space or model version, a part that is not its own, or a part that does not read is refused by
name, never mixed or overwritten.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tapeout
from tapeout.errors import TapeoutError
from tapeout.explore.evaluate import Result
from tapeout.explore.space import Space

SCHEMA = "tapeout-explore-store/1"
MANIFEST = "manifest.json"
INSTALL = "the results store needs pyarrow: pip install 'tapeout[explore]'"


def model_version() -> str:
    """The package version and a hash of the data in force: the calibration file, the energy and
    silicon figures, the hardware catalog and designs, the model catalog."""
    # imported here: the calibration module reads its file lazily
    from tapeout.perf.calibration import active_file

    root = Path(tapeout.__file__).parent
    files = [active_file(), root / "perf" / "energy.yaml", root / "cost" / "silicon.yaml"]
    for folder in ("hardware/catalog", "hardware/designs", "workloads/catalog"):
        files += sorted((root / folder).glob("*.*"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return f"{tapeout.__version__}+{h.hexdigest()[:12]}"


def _arrow() -> tuple[Any, Any]:
    """pyarrow and its Parquet module, imported on first use (an optional dependency)."""
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise TapeoutError(f"{INSTALL} ({exc})") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    index: int  # the order the sweep first asked for the design
    key: str
    result: Result


class Store:
    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest

    @classmethod
    def open(cls, folder: str | Path, space: Space, version: str) -> Store:
        """The store at `folder` for `space`, created if absent; one of another space or model
        version is refused."""
        _arrow()  # before anything is written
        path = Path(folder)
        own = {"schema": SCHEMA, "space_hash": space.hash, "model_version": version,
               "space": str(Path(space.origin).absolute()), "knobs": list(space.names),
               "objectives": {o.metric: o.direction for o in space.objectives}}  # fmt: skip
        if path.exists() and not path.is_dir():
            raise TapeoutError(f"results store {path}: exists and is not a folder")
        found = cls.read_manifest(path) if (path / MANIFEST).exists() else None
        if found is None:
            if path.exists() and any(path.glob("part-*.parquet")):
                raise TapeoutError(
                    f"results store {path}: has result files but no {MANIFEST}; refusing to mix"
                )
            path.mkdir(parents=True, exist_ok=True)
            _atomic(path / MANIFEST, json.dumps(own, indent=2).encode())
            return cls(path, own)
        for field, what in (("space_hash", "space"), ("model_version", "model version")):
            if found.get(field) != own[field]:
                raise TapeoutError(
                    f"results store {path}: written for another {what} ({field} {found.get(field)!r}, this run "
                    f"{own[field]!r}); give another --out folder"
                )
        return cls(path, found)

    @staticmethod
    def read_manifest(path: Path) -> dict[str, Any]:
        try:
            data = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise TapeoutError(f"results store {path}: {MANIFEST} is corrupt or unreadable ({exc})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise TapeoutError(f"results store {path}: {MANIFEST} is not a {SCHEMA} manifest")
        return data

    def write(self, rows: Sequence[Row]) -> None:
        """One batch, atomically (temporary file, flush, rename)."""
        if not rows:
            return
        pa, pq = _arrow()
        names = self.manifest["knobs"]
        metrics = sorted({m for r in rows for m in r.result.metrics})
        columns: dict[str, list[Any]] = {
            "index": [r.index for r in rows], "key": [r.key for r in rows],
            **{f"knob.{n}": [r.result.knobs[n] for r in rows] for n in names},
            **{f"metric.{m}": [float(r.result.metrics.get(m, math.nan)) for r in rows] for m in metrics},
            "feasible": [r.result.feasible for r in rows], "reason": [r.result.reason for r in rows],
            "violation": [float(r.result.violation) for r in rows],
        }  # fmt: skip
        meta = {b"space_hash": self.manifest["space_hash"].encode(),
                b"model_version": self.manifest["model_version"].encode()}  # fmt: skip
        types = {"index": pa.int64(), "key": pa.string(), "feasible": pa.bool_(), "reason": pa.string(),
                 "violation": pa.float64(), **{f"metric.{m}": pa.float64() for m in metrics}}  # fmt: skip
        table = pa.table(
            {c: pa.array(v, type=types.get(c) or _arrow_type(pa, v[0])) for c, v in columns.items()}
        ).replace_schema_metadata(meta)
        name = "part-" + hashlib.sha256("\n".join(r.key for r in rows).encode()).hexdigest()[:20] + ".parquet"
        tmp = self.folder / (name + f".tmp{os.getpid()}")
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)

    def rows(self) -> list[Row]:
        """Every stored design, in the order the sweep asked for them; temporary files of a killed
        run are removed, a part that does not read or is not of this store is refused."""
        for tmp in self.folder.glob("part-*.tmp*"):
            tmp.unlink()
        out: dict[str, Row] = {}
        for part in sorted(self.folder.glob("part-*.parquet")):
            for row in self._read(part):
                if row.key in out:
                    raise TapeoutError(
                        f"results store {self.folder}: design {row.key} is stored twice ({part.name})"
                    )
                out[row.key] = row
        return sorted(out.values(), key=lambda r: r.index)

    def _read(self, part: Path) -> Iterable[Row]:
        pa, pq = _arrow()
        try:
            table = pq.read_table(part)
        except (OSError, pa.ArrowException) as exc:
            raise TapeoutError(f"results store {self.folder}: {part.name} is corrupt ({exc})") from None
        meta = table.schema.metadata or {}
        for field in ("space_hash", "model_version"):
            if meta.get(field.encode(), b"").decode() != self.manifest[field]:
                raise TapeoutError(
                    f"results store {self.folder}: {part.name} was written for another {field}"
                )
        data = table.to_pydict()
        names = self.manifest["knobs"]
        metrics = [c[len("metric.") :] for c in data if c.startswith("metric.")]
        for i in range(table.num_rows):
            r = Result(
                knobs={n: data[f"knob.{n}"][i] for n in names},
                metrics={m: _float(data[f"metric.{m}"][i]) for m in metrics},
                feasible=bool(data["feasible"][i]), reason=str(data["reason"][i]),
                violation=float(data["violation"][i]),
            )  # fmt: skip
            yield Row(index=int(data["index"][i]), key=str(data["key"][i]), result=r)


def _arrow_type(pa: Any, first: Any) -> Any:
    """A knob column's Arrow type from its first value (a knob's values are of one kind: whole
    numbers, numbers or names). Types are given, not inferred: inferring imports optional modules
    on every column, a third of a big sweep's writing."""
    if isinstance(first, int):
        return pa.int64()
    return pa.float64() if isinstance(first, float) else pa.string()


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
