"""One error type for bad input, and the translation of schema errors into sentences that name
the file, the entry, the field, the value and the unit."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tapeout.units import unit_of

if TYPE_CHECKING:  # the annotation only: the command line starts without importing pydantic
    import pydantic


class TapeoutError(ValueError):
    """Bad input: a spec, model, case or option that is wrong or impossible."""


class DoesNotFit(TapeoutError):
    """A model, its cache, its tables or its training state do not fit in the chips' memory; the
    message names the parts and the overflow."""


class UnknownIdError(TapeoutError, KeyError):
    """An id not in a catalog; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def unknown_id(what: str, name: str, known: Iterable[str]) -> UnknownIdError:
    """An unknown id, with the closest known ones first.

    >>> str(unknown_id("model id", "llama-3.1-8", ["llama-3.1-8b", "llama-3.1-70b", "bert-large"]))
    "unknown model id 'llama-3.1-8'; did you mean llama-3.1-8b, llama-3.1-70b? known: bert-large, llama-3.1-70b, llama-3.1-8b"
    """
    ids = sorted(known)
    close = difflib.get_close_matches(str(name), ids, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownIdError(f"unknown {what} {name!r}; {hint}known: {', '.join(ids)}")


def shown(value: Any) -> str:
    """`repr(value)` for a message; Python refuses to print an integer of over 4,300 digits.

    >>> shown(10**5000)
    'an integer of more than 4,300 digits'
    """
    try:
        return repr(value)
    except ValueError:
        return f"an integer of more than {sys.get_int_max_str_digits():,} digits"


def _where(origin: str | None, entry: str | None) -> str:
    parts = [p for p in (origin, entry) if p]
    return ": ".join(parts) + ": " if parts else ""


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def from_validation(
    exc: pydantic.ValidationError,
    origin: str | None,
    entry: str | None,
    prefix: str = "",
    units: Mapping[str, str] | None = None,
) -> TapeoutError:
    """Turn pydantic's error list into one TapeoutError naming every bad field; `units` names
    the unit of fields whose names carry no unit suffix."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = (prefix + "." if prefix and loc else prefix) + _loc(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "missing"
        else:
            msg = f"{err['msg']} (got {shown(err.get('input'))})"
        name = field.rsplit(".", 1)[-1]
        unit = (units or {}).get(name) or unit_of(name)
        lines.append(f"field {field!r}: {msg}" + (f" (unit: {unit})" if unit else ""))
    return TapeoutError(_where(origin, entry) + "; ".join(lines))


def require_mapping(value: Any, origin: str | None, entry: str | None, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TapeoutError(
            f"{_where(origin, entry)}field {field!r}: expected a mapping, got {type(value).__name__}"
        )
    return value


def entry_id(data: Mapping[str, Any], default: str | None = None) -> str | None:
    """The `id` of an entry, to name it in errors: when it is a string, else `default`.

    >>> entry_id({"id": "h100-sxm"}), entry_id({"id": [1]}, "case 3")
    ('h100-sxm', 'case 3')
    """
    value = data.get("id")
    return value if isinstance(value, str) and value else default
