"""A design space (`tapeout-space/1`): a base design, knobs, constraints, a workload mix,
objectives and a search. `docs/explore.md` documents the file; `load_space` reads one.

    schema: tapeout-space/1
    base: tapeout-i1                  # a design id (hardware/designs) or a design file
    software: mature                  # the profile our chips run with: mature or launch
    knobs:
      num_cores: {min: 32, max: 96, step: 16}
      clock_ghz: {min: 1.0, max: 1.8, log: true, points: 4}
      memory.interfaces: [4, 6, 8]
    constraints:
      die_area_mm2: {max: 600}
    mix:
      - {name: chat, kind: llm_serving, weight: 1, model: llama-3.1-8b, ttft_limit_s: 1, tpot_limit_s: 0.05}
    objectives: {usd_per_million: min, throughput: max}
    search: {strategy: random, budget: 2000, seed: 0}

The space's hash covers everything but `search` (and the base design's contents, not its name,
and the contents of the compiled programs its mix names): a store is of one space, whatever the
budget, seed or strategy that filled it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tapeout._yaml import load_data_file
from tapeout.cost.api import DEFAULT_VOLUME
from tapeout.cost.tco import TcoAssumptions
from tapeout.errors import TapeoutError, require_mapping, shown, unknown_id
from tapeout.explore.kinds import lower
from tapeout.explore.knobs import Knob, known_knobs, parse_knob
from tapeout.explore.mix import Context, Workload, from_fields
from tapeout.explore.silicon import SILICON_METRICS, Bound
from tapeout.explore.variant import catalog_knobs, stack_gb
from tapeout.hardware.catalog import CATALOG_DIR, DESIGNS_DIR
from tapeout.hardware.design import HBM_STACK_GB, expand_design

SCHEMA = "tapeout-space/1"
SOFTWARE = ("mature", "launch")  # the profiles of chips with no measured software
Strategy = Literal["grid", "random", "nsga2"]
STRATEGIES: tuple[Strategy, ...] = ("grid", "random", "nsga2")
TOP = ("schema", "base", "software", "volume", "tco", "knobs", "constraints", "mix", "objectives", "search")
# What the mix's objectives measure; a silicon metric may be an objective too.
MIX_METRICS: dict[str, str] = {
    "throughput": "mix units per second per chip",
    "perf_per_tco": "mix units per US dollar of TCO",
    "perf_per_watt": "mix units per second per W of the power budget",
    "perf_per_mm2": "mix units per second per mm^2 of die",
    "usd_per_million": "US dollars of TCO per million mix units",
}
MAX_BUDGET = 100_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Objective:
    metric: str
    direction: Literal["min", "max"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Search:
    strategy: Strategy = "random"
    budget: int | None = None  # designs; None: the whole grid, or 1,000
    seed: int = 0
    batch: int = 256  # designs per task shipped to a worker
    population: int = 64  # designs per generation (nsga2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Space:
    origin: str
    base_id: str
    base: Mapping[str, Any]  # the base design file's mapping, or the catalog chip's
    software: str
    volume: int
    tco: TcoAssumptions
    knobs: tuple[Knob, ...]
    bounds: tuple[Bound, ...]
    mix: tuple[Mapping[str, Any], ...]  # the entries as written; `lower()` builds the workloads
    objectives: tuple[Objective, ...]
    search: Search
    hash: str
    catalog: bool = False  # the base is a catalog chip (`explore.variant`), not a design file
    folder: str = "."  # of the space file: the files it names are read beside it

    def lower(self) -> list[Workload]:
        """The mix's workloads, each lowered once."""
        context = Context(software=self.software, folder=self.folder)
        return [lower(raw, i, self.origin, context) for i, raw in enumerate(self.mix)]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)


def load_space(path: str | Path, **search: Any) -> Space:
    """Read and check a space file; `search` overrides fields of its `search:` section (budget,
    seed...). Every workload of the mix is lowered once here, so a bad entry fails now."""
    p = Path(path)
    data = require_mapping(load_data_file(p), str(p), None, "<root>")
    space = parse_space(data, str(p), p.parent, search)
    space.lower()
    return space


def parse_space(
    data: Mapping[str, Any], origin: str, folder: Path, search: Mapping[str, Any] | None = None
) -> Space:
    if data.get("schema") != SCHEMA:
        raise TapeoutError(f"{origin}: field 'schema': expected {SCHEMA!r}, got {shown(data.get('schema'))}")
    unknown = sorted(set(data) - set(TOP))
    if unknown:
        raise TapeoutError(f"{origin}: unknown fields {unknown}; known: {', '.join(TOP)}")
    base_id, base, catalog = _base(data.get("base"), origin, folder)
    knobs = _knobs(data.get("knobs"), base, origin, catalog)
    software = data.get("software", "mature")
    if software not in SOFTWARE:
        raise TapeoutError(f"{origin}: field 'software': {shown(software)}; known: {', '.join(SOFTWARE)}")
    volume = data.get("volume", DEFAULT_VOLUME)
    if not isinstance(volume, int) or isinstance(volume, bool) or volume < 1:
        raise TapeoutError(
            f"{origin}: field 'volume': expected a whole number >= 1 (units), got {shown(volume)}"
        )
    mix = data.get("mix")
    if not isinstance(mix, list) or not mix:
        raise TapeoutError(
            f"{origin}: field 'mix': expected a list of workloads (llm_serving, recsys, llm_training)"
        )
    names = [e.get("name") for e in mix if isinstance(e, Mapping)]
    if len(set(names)) != len(names):
        raise TapeoutError(f"{origin}: field 'mix': two entries share a name: {names}")
    evaluated = {k: v for k, v in data.items() if k != "search"}
    files = _named_files(mix, folder)
    digest = json.dumps({"space": evaluated, "base": base, **({"files": files} if files else {})},
                        sort_keys=True, default=str)  # fmt: skip
    return Space(
        origin=origin, base_id=base_id, base=base, software=software, volume=volume,
        tco=_tco(data.get("tco"), origin), knobs=knobs, bounds=_bounds(data.get("constraints"), origin),
        mix=tuple(mix), objectives=_objectives(data.get("objectives"), origin),
        search=_search({**dict(data.get("search") or {}), **dict(search or {})}, origin),
        hash=hashlib.sha256(digest.encode()).hexdigest()[:16], catalog=catalog, folder=str(folder),
    )  # fmt: skip


def _named_files(mix: list[Any], folder: Path) -> dict[str, str]:
    """The contents' hash of each file the mix names (a compiled program), so that a changed file
    makes another space."""
    out: dict[str, str] = {}
    for entry in mix:
        name = entry.get("program") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and (folder / name).is_file():
            out[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return out


def _base(ref: Any, origin: str, folder: Path) -> tuple[str, Mapping[str, Any], bool]:
    """The base: an id of `hardware/designs`, a design file (relative to the space), or a catalog
    chip (its published numbers scaled by the knobs, `explore.variant`); and whether it is one."""
    if not isinstance(ref, str) or not ref:
        raise TapeoutError(
            f"{origin}: field 'base': expected a design id (such as tapeout-i1), a design file or a catalog chip"
        )
    path, catalog = folder / ref, False
    if ref.endswith((".yaml", ".yml", ".json")):
        if not path.is_file():
            raise TapeoutError(f"{origin}: field 'base': no design file {ref!r} beside the space file")
    elif (DESIGNS_DIR / f"{ref}.yaml").is_file():
        path = DESIGNS_DIR / f"{ref}.yaml"
    elif (CATALOG_DIR / f"{ref}.yaml").is_file():
        path, catalog = CATALOG_DIR / f"{ref}.yaml", True
    else:
        known = [p.stem for p in DESIGNS_DIR.glob("*.yaml")] + [p.stem for p in CATALOG_DIR.glob("*.yaml")]
        raise unknown_id("base", ref, known)
    data = require_mapping(load_data_file(path), str(path), None, "<root>")
    if not catalog:
        expand_design(data, str(path))  # a base that is no valid design is refused by its field
    return str(data.get("id", ref)), data, catalog


def _knobs(raw: Any, base: Mapping[str, Any], origin: str, catalog: bool) -> tuple[Knob, ...]:
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise TapeoutError(f"{origin}: field 'knobs': expected a mapping of knob -> range or choices")
    known = catalog_knobs(base) if catalog else known_knobs(base)
    out = []
    for name, entry in raw.items():
        if name not in known:
            raise TapeoutError(
                f"{origin}: field 'knobs.{name}': unknown knob; known: {', '.join(sorted(known))}"
            )
        if name.startswith("scale_up.") and not base.get("scale_up"):
            raise TapeoutError(f"{origin}: field 'knobs.{name}': the base design has no scale-up link")
        out.append(parse_knob(name, entry, known[name], origin))
    _memory_pairs({k.name: k for k in out}, base, origin, catalog)
    return tuple(out)


def _memory_pairs(knobs: Mapping[str, Knob], base: Mapping[str, Any], origin: str, catalog: bool) -> None:
    """Refuse an HBM type none of whose stack sizes the space allows."""
    if catalog and "memory.type" not in knobs and "memory.gb_per_interface" not in knobs:
        return  # the published stacks as they are
    types = knobs["memory.type"].grid() if "memory.type" in knobs else (base["memory"]["type"],)
    size = stack_gb(base) if catalog else base["memory"]["gb_per_interface"]
    sizes = knobs["memory.gb_per_interface"].grid() if "memory.gb_per_interface" in knobs else (size,)
    for t in types:
        stacks = HBM_STACK_GB.get(str(t))
        if stacks is not None and not any(float(s) in stacks for s in sizes):
            raise TapeoutError(
                f"{origin}: field 'knobs.memory.type': {t} stacks hold {', '.join(f'{g:g}' for g in stacks)} GB; "
                f"the space allows memory.gb_per_interface {', '.join(f'{float(s):g}' for s in sizes)} GB only"
            )


def _bounds(raw: Any, origin: str) -> tuple[Bound, ...]:
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise TapeoutError(f"{origin}: field 'constraints': expected a mapping of metric -> {{min, max}}")
    out = []
    for metric, entry in raw.items():
        where = f"{origin}: field 'constraints.{metric}'"
        if metric not in SILICON_METRICS:
            raise TapeoutError(f"{where}: unknown metric; known: {', '.join(SILICON_METRICS)}")
        if not isinstance(entry, Mapping) or not entry or set(entry) - {"min", "max"}:
            raise TapeoutError(
                f"{where}: expected {{min: x}}, {{max: x}} or both ({SILICON_METRICS[metric]})"
            )
        for key, value in entry.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TapeoutError(
                    f"{where}.{key}: expected a number ({SILICON_METRICS[metric]}), got {shown(value)}"
                )
        low, high = entry.get("min"), entry.get("max")
        if low is not None and high is not None and low > high:
            raise TapeoutError(f"{where}: min {low:g} > max {high:g}: no design can meet it")
        out.append(Bound(metric=metric, low=low, high=high))
    return tuple(out)


def _objectives(raw: Any, origin: str) -> tuple[Objective, ...]:
    """`{metric: min|max, ...}`, in order; two or three make a Pareto front."""
    if not isinstance(raw, Mapping) or not raw:
        raise TapeoutError(f"{origin}: field 'objectives': expected a mapping of metric -> min or max")
    known = {**MIX_METRICS, **SILICON_METRICS}
    out = []
    for metric, direction in raw.items():
        if metric not in known:
            raise TapeoutError(
                f"{origin}: field 'objectives.{metric}': unknown metric; known: {', '.join(known)}"
            )
        if direction not in ("min", "max"):
            raise TapeoutError(
                f"{origin}: field 'objectives.{metric}': expected min or max, got {shown(direction)}"
            )
        out.append(Objective(metric=metric, direction=direction))
    if len(out) > 3:
        raise TapeoutError(
            f"{origin}: field 'objectives': {len(out)} given; a front is over one, two or three"
        )
    return tuple(out)


def _tco(raw: Any, origin: str) -> TcoAssumptions:
    if raw is None:
        return TcoAssumptions()
    known = list(TcoAssumptions.__dataclass_fields__)
    return from_fields(TcoAssumptions, raw, known, f"{origin}: field 'tco'", "TCO assumptions")


def _search(raw: Mapping[str, Any], origin: str) -> Search:
    known = Search.__dataclass_fields__
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TapeoutError(f"{origin}: field 'search': unknown {unknown}; known: {', '.join(known)}")
    strategy = raw.get("strategy", "random")
    if strategy not in STRATEGIES:
        raise TapeoutError(
            f"{origin}: field 'search.strategy': {shown(strategy)}; known: {', '.join(STRATEGIES)}"
        )
    for key, high in (
        ("budget", MAX_BUDGET),
        ("batch", 1_000_000),
        ("population", 100_000),
        ("seed", 2**32 - 1),
    ):
        value = raw.get(key)
        low = 0 if key == "seed" else 1 if key != "population" else 4
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
        ):
            raise TapeoutError(f"{origin}: field 'search.{key}': expected a whole number in [{low}, {high:,}], "
                               f"got {shown(value)}")  # fmt: skip
    return Search(
        **{"strategy": strategy, **{k: v for k, v in raw.items() if k != "strategy" and v is not None}}
    )
