"""Efficiency figures: data, not code.

`calibration.yaml` holds, per software stack (the kernel and collective libraries a chip family
runs: CUDA, ROCm, ...), the fraction of a datasheet peak that a tuned library reaches. Each figure
names the public cases it was derived from; `tapeout calibrate` re-derives them from those cases
alone (see `tapeout.calibrate`). A figure is fitted only where a stack has at least two public
measurements of that quantity; otherwise it comes from another published source, stated in the
file, or from the default (the fit over all stacks).

The figures in force are those of the file given to `use` (the CLI's `--calibration PATH`), else
of the file `TAPEOUT_CALIBRATION` names, else the shipped file. Every file read is checked: each
figure finite and within `LIMITS`.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError

CALIBRATION_FILE = Path(__file__).parent / "calibration.yaml"
ENV_VAR = "TAPEOUT_CALIBRATION"
SCHEMA = "tapeout-calibration/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """The efficiency figures one chip runs with. All are fractions of a datasheet peak except
    the overheads."""

    matmul_16bit: float  # of the dense matrix peak, for 16- and 32-bit inputs
    matmul_8bit: float  # of the dense matrix peak, for 8- and 4-bit inputs
    attention: float  # of the matrix peak inside a fused attention kernel
    attention_overhead_blocks: float  # per-CTA prologue/epilogue, in key-block iterations
    memory: float  # of the datasheet DRAM bandwidth, for streaming kernels
    link: float  # of the per-direction scale-up / scale-out bandwidth, ring and point-to-point
    in_switch: float  # of the per-direction link bandwidth, for in-switch reduction (NVLS)
    kernel_overhead_us: float  # fixed cost of launching one kernel
    serving_efficiency: float  # of the kernel-level matrix rate, inside a serving engine's iterations
    training_efficiency: float  # the same inside a training framework's steps
    idle_power_fraction: float  # of TDP, drawn while the chip is busy with nothing

    def matmul(self, precision: str) -> float:
        return self.matmul_8bit if precision in ("fp8", "int8", "fp4") else self.matmul_16bit

    def with_values(self, **values: float) -> Calibration:
        return replace(self, **values)


FIGURES = tuple(f.name for f in fields(Calibration))


@dataclass(frozen=True, slots=True)
class Limit:
    """The values a figure may take. Generous: it catches a typo or a runaway fit, it does not
    judge a figure."""

    low: float
    high: float
    low_open: bool
    high_open: bool
    unit: str

    def admits(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right} {self.unit}"


_FRACTION = Limit(0.0, 1.0, True, False, "(a fraction of a datasheet peak)")
LIMITS: Mapping[str, Limit] = {
    "matmul_16bit": _FRACTION,
    "matmul_8bit": _FRACTION,
    "attention": _FRACTION,
    "memory": _FRACTION,
    "link": _FRACTION,
    "in_switch": _FRACTION,
    # The fit searches 0-6 blocks; dozens would mean a CTA does little but its prologue.
    "attention_overhead_blocks": Limit(0.0, 64.0, False, False, "key-block iterations"),
    # A launch costs microseconds; a millisecond would swamp most ops the cases time.
    "kernel_overhead_us": Limit(0.0, 1000.0, False, False, "us"),
    "serving_efficiency": _FRACTION,
    "training_efficiency": _FRACTION,
    # All of TDP drawn while idle would leave no power for work.
    "idle_power_fraction": Limit(0.0, 1.0, False, True, "(of TDP)"),
}


def _value(entry: Any, origin: str | Path, figure: str, stack: str) -> float:
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    where = f"{origin}: figures.{figure}.{stack}"
    limit = LIMITS[figure]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TapeoutError(f"{where}: expected a number in {limit}, got {value!r}")
    if not math.isfinite(value):
        raise TapeoutError(f"{where}: value {value!r} is not finite; allowed range {limit}")
    if not limit.admits(value):
        raise TapeoutError(f"{where}: value {value!r} is outside the allowed range {limit}")
    return float(value)


class SoftwareLike(Protocol):
    """What ran, or will run, a workload: a case's `software`, or `--software NAME[@VERSION]`."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def date(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SoftwareRef:
    """A software named on the command line or in an API call: `NAME[@VERSION]`.

    >>> SoftwareRef.parse("trt-llm@0.17")
    SoftwareRef(name='trt-llm', version='0.17', date=None)
    """

    name: str
    version: str | None = None
    date: str | None = None  # YYYY-MM: picks the profile's era, if it has eras

    @classmethod
    def parse(cls, text: str, field: str = "software") -> SoftwareRef:
        name, at, version = text.strip().partition("@")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", name) or (at and not version.strip()):
            raise TapeoutError(
                f"field {field!r}: {text!r} is not NAME[@VERSION] (a lower-case name such as trt-llm, "
                "vllm, megatron-lm or mature, then an optional version)"
            )
        return cls(name, version.strip() or None)


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A software profile of the file: the family it belongs to (a serving engine, a training
    framework...), or the stack whose figures it takes (`like`, for `mature` and `launch`)."""

    family: str | None
    like: str | None
    eras: tuple[tuple[str, str, str], ...] = ()  # (name, first month, last month): `NAME@ERA` keys


@dataclass(frozen=True, slots=True)
class Profile:
    """Which figures a run took: the software asked for, the keys searched (most specific first)
    and a note when the name was not a profile of the file."""

    asked: str | None
    keys: tuple[str, ...]  # searched, most specific first
    used: tuple[str, ...]  # those of `keys` with figures of their own
    note: str | None = None

    def __str__(self) -> str:
        head = f"{self.asked or 'none given'}: figures of {' > '.join(self.used)}"
        return head + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True, slots=True, eq=False)  # by identity: a table is read once
class CalibrationTable:
    """Stacks, the families each covers, software profiles, and each figure's entries."""

    stack_of_family: Mapping[str, str]
    profiles: Mapping[str, ProfileSpec]
    unmeasured: str | None  # the profile a chip whose family has no stack takes by default
    entries: Mapping[str, Mapping[str, float]]  # figure -> key (default, stack, family, profile) -> value
    raw: Mapping[str, Any]

    @property
    def default(self) -> Calibration:
        return self.resolve_keys(("default",))

    @property
    def stacks(self) -> dict[str, Calibration]:
        """Each stack's figures (its own entries, else the default)."""
        return {s: self.resolve_keys((s, "default")) for s in set(self.stack_of_family.values())}

    def profile(
        self, family: str, software: SoftwareLike | None = None, workload: str | None = None
    ) -> Profile:
        """The keys whose entries a chip of `family` running `software` takes, most specific first:
        `NAME@VERSION`, `NAME@ERA` (the era its date falls in), `NAME`, the profile's family, the
        chip's stack (or the stack a `like` profile names), the default. A chip whose family has no stack and no software given takes
        the `unmeasured` profile. A name the file does not know, or a profile of another family
        than the `workload` (serving, training, recsys), takes the chip's stack, with a note."""
        stack = self.stack_of_family.get(family)
        keys: list[str] = []
        note = None
        asked = None
        if software is None and stack is None and self.unmeasured:
            software = SoftwareRef(self.unmeasured)
            note = f"{family} has no measured software; the profile for such chips"
        if software is not None:
            asked = software.name + (f"@{software.version}" if software.version else "")
            spec = self.profiles.get(software.name)
            instead = f"the {stack or 'default'} figures used instead"
            if spec is None:
                note = f"not a profile of the calibration; {instead}"
            elif workload and spec.family not in (None, workload, "kernels"):
                note = f"a {spec.family} profile, not a {workload} one; {instead}"
            else:
                if software.version:
                    keys.append(asked)
                keys += [f"{software.name}@{era}" for era, first, last in spec.eras
                         if software.date and first <= software.date <= last]  # fmt: skip
                keys += [software.name] + ([spec.family] if spec.family else [])
                stack = spec.like or stack
        keys += ([stack] if stack else []) + ["default"]
        found = tuple(dict.fromkeys(keys))
        used = tuple(k for k in found if any(k in by_key for by_key in self.entries.values()))
        return Profile(asked, found, used, note)

    def resolve_keys(
        self, keys: tuple[str, ...], overrides: Mapping[tuple[str, str], float] | None = None
    ) -> Calibration:
        """Each figure from the first of `keys` that has an entry for it (`overrides` replacing
        the file's value of an entry)."""
        values = {}
        for figure, by_key in self.entries.items():
            key = next(k for k in keys if k in by_key)
            values[figure] = overrides.get((figure, key), by_key[key]) if overrides else by_key[key]
        return Calibration(**values)

    def resolve(
        self, family: str, software: SoftwareLike | None = None, workload: str | None = None
    ) -> tuple[Calibration, Profile]:
        profile = self.profile(family, software, workload)
        return _resolved(self, profile.keys), profile

    def for_family(self, family: str) -> Calibration:
        """The figures of a chip of `family` with no software named (memoised per table)."""
        return _for_family(self, family)

    def stack(self, family: str) -> str:
        return self.stack_of_family.get(family, "default")


@functools.lru_cache(maxsize=256)
def _for_family(tbl: CalibrationTable, family: str) -> Calibration:
    return tbl.resolve(family)[0]


@functools.lru_cache(maxsize=256)
def _resolved(tbl: CalibrationTable, keys: tuple[str, ...]) -> Calibration:
    return tbl.resolve_keys(keys)


def _mapping(value: Any, origin: str | Path, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TapeoutError(f"{origin}: field {field!r}: expected a mapping, got {value!r}")
    return value


RESERVED = ("default", "explain")  # the figure entries use these keys themselves


def _families(stacks_raw: Mapping[str, Any], origin: str | Path) -> dict[str, str]:
    """The stack of each chip family; a family in two stacks would get either's figures."""
    out: dict[str, str] = {}
    for stack, families in stacks_raw.items():
        if stack in RESERVED:
            raise TapeoutError(f"{origin}: field 'stacks': {stack!r} cannot name a stack")
        if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
            raise TapeoutError(
                f"{origin}: field 'stacks.{stack}': expected a list of chip families, got {families!r}"
            )
        for family in families:
            if family in out:
                raise TapeoutError(
                    f"{origin}: field 'stacks.{stack}': family {family!r} is already in stack {out[family]!r}"
                )
            out[family] = stack
    return out


def _profiles(
    raw: Mapping[str, Any], stacks: Mapping[str, Any], origin: str | Path
) -> tuple[dict[str, ProfileSpec], set[str], str | None]:
    """The `software` section: its families, its profiles and the profile of unmeasured chips."""
    families = raw.get("families") or []
    if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
        raise TapeoutError(f"{origin}: field 'software.families': expected a list of names, got {families!r}")
    profiles: dict[str, ProfileSpec] = {}
    for name, entry in _mapping(raw.get("profiles") or {}, origin, "software.profiles").items():
        where = f"{origin}: field 'software.profiles.{name}'"
        entry = _mapping(entry, origin, f"software.profiles.{name}")
        family, like = entry.get("family"), entry.get("like")
        if name in RESERVED or name in stacks or name in families:
            raise TapeoutError(f"{where}: the name is taken by a stack, a family or the file itself")
        if family is not None and family not in families:
            raise TapeoutError(f"{where}: family {family!r} is not in software.families {families}")
        if like is not None and like not in stacks:
            raise TapeoutError(f"{where}: like {like!r} is not a stack ({', '.join(stacks)})")
        profiles[name] = ProfileSpec(family, like, _eras(entry.get("eras") or {}, where))
    unmeasured = raw.get("unmeasured")
    if unmeasured is not None and unmeasured not in profiles:
        raise TapeoutError(f"{origin}: field 'software.unmeasured': {unmeasured!r} is not a profile")
    return profiles, set(families), unmeasured


def _eras(raw: Any, where: str) -> tuple[tuple[str, str, str], ...]:
    """A profile's eras: `{NAME: [FIRST, LAST]}`, months as YYYY-MM, FIRST <= LAST."""
    if not isinstance(raw, Mapping):
        raise TapeoutError(
            f"{where}.eras: expected a mapping of era -> [first month, last month], got {raw!r}"
        )
    out = []
    for era, span in raw.items():
        months = [str(m) for m in span] if isinstance(span, list) else []
        if (
            len(months) != 2
            or not all(re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", m) for m in months)
            or months[0] > months[1]
        ):
            raise TapeoutError(
                f"{where}.eras.{era}: expected [first, last] months as YYYY-MM in order, got {span!r}"
            )
        out.append((str(era), months[0], months[1]))
    return tuple(out)


def _entry_keys(name: str, profiles: Mapping[str, ProfileSpec], known: set[str]) -> bool:
    """Whether a figure's entry key names something: a stack, a family, a profile, or a profile
    at a version (`trt-llm@0.17`)."""
    return name in known or name.partition("@")[0] in profiles


def parse_table(data: Mapping[str, Any], origin: str | Path = CALIBRATION_FILE) -> CalibrationTable:
    """Check and parse a calibration file's contents; errors name `origin`, the field and the value."""
    if data.get("schema") != SCHEMA:
        raise TapeoutError(f"{origin}: field 'schema': expected {SCHEMA!r}, got {data.get('schema')!r}")
    stacks_raw = _mapping(data.get("stacks") or {}, origin, "stacks")
    figures_raw = _mapping(data.get("figures") or {}, origin, "figures")
    unknown = sorted(set(figures_raw) - set(FIGURES))
    missing = sorted(set(FIGURES) - set(figures_raw))
    if unknown or missing:
        raise TapeoutError(f"{origin}: figures: unknown {unknown}, missing {missing}")
    family_stack = _families(stacks_raw, origin)
    profiles, families, unmeasured = _profiles(
        _mapping(data.get("software") or {}, origin, "software"), stacks_raw, origin
    )
    known = {"default", *stacks_raw, *families}
    entries: dict[str, dict[str, float]] = {}
    for name in FIGURES:
        raw = _mapping(figures_raw[name], origin, f"figures.{name}")
        stray = sorted(k for k in raw if k != "explain" and not _entry_keys(k, profiles, known))
        if stray:
            raise TapeoutError(f"{origin}: figures.{name}: unknown stacks, families or profiles {stray}")
        if "default" not in raw:
            raise TapeoutError(f"{origin}: figures.{name}: missing the 'default' entry")
        entries[name] = {k: _value(v, origin, name, k) for k, v in raw.items() if k != "explain"}
    return CalibrationTable(family_stack, profiles, unmeasured, entries, data)


def load_table(path: Path) -> CalibrationTable:
    """Read and check one calibration file."""
    data = load_data_file(path)
    if not isinstance(data, Mapping):
        raise TapeoutError(f"{path}: expected a mapping with the fields 'schema', 'stacks' and 'figures'")
    return parse_table(data, path)


# The file `use` chose, with its figures; None: the file TAPEOUT_CALIBRATION names, else the
# shipped one.
_chosen: tuple[Path, CalibrationTable] | None = None

# How many times the figures in force have changed: a cache keyed on anything but a `System`
# (which carries its figures) keys on it too.
_generation = 0


def generation() -> int:
    """Counts the changes of the figures in force (`use`, `reload`)."""
    return _generation


def active_file() -> Path:
    """The file whose figures are in force."""
    if _chosen is not None:
        return _chosen[0]
    named = os.environ.get(ENV_VAR, "").strip()
    return Path(named).expanduser() if named else CALIBRATION_FILE


@cache
def table() -> CalibrationTable:
    """The figures in force (see `active_file`), read once until `use` or `reload`."""
    if _chosen is not None:
        return _chosen[1]
    path = active_file()
    try:
        return load_table(path)
    except TapeoutError as exc:
        if path == CALIBRATION_FILE:
            raise
        raise TapeoutError(f"{exc} (the calibration file {ENV_VAR} names)") from exc


def use(path: Path | None) -> None:
    """Put the figures of the calibration file `path` in force for everything that follows; None
    goes back to the file TAPEOUT_CALIBRATION names, else the shipped one. The file is read and
    checked now: a bad one raises and leaves the figures in force as they were."""
    global _chosen
    _chosen = None if path is None else (path.expanduser().absolute(), load_table(path))
    _forget()


def reload() -> None:
    """Read the file in force again (after it was rewritten)."""
    use(_chosen[0] if _chosen is not None else None)


def _forget() -> None:
    global _generation
    _generation += 1
    table.cache_clear()
    _resolved.cache_clear()


def calibration_for(
    family: str, software: SoftwareLike | None = None, workload: str | None = None
) -> Calibration:
    """The figures a chip of `family` runs with under `software` (None: its stack's)."""
    return table().resolve(family, software, workload)[0]


def profile_for(family: str, software: SoftwareLike | None = None, workload: str | None = None) -> Profile:
    """Which figures a chip of `family` takes under `software`, to say so in output."""
    return table().profile(family, software, workload)
