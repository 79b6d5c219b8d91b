"""The kinds of a mix's entries, registered in one place, and lowering one entry."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tapeout.errors import TapeoutError
from tapeout.explore.mix import Context, Fields, Workload
from tapeout.explore.program import OWN as PROGRAM
from tapeout.explore.program import lower as program
from tapeout.explore.recsys import OWN as RECSYS
from tapeout.explore.recsys import lower as recsys
from tapeout.explore.serving import OWN as SERVING
from tapeout.explore.serving import lower as serving
from tapeout.explore.training import OWN as TRAINING
from tapeout.explore.training import lower as training

COMMON = ("name", "kind", "weight")
Lower = Callable[[Fields, str, float, Context], Workload]
# Each kind: how its entry is read and lowered, and the fields it reads besides the common ones.
KINDS: dict[str, tuple[Lower, tuple[str, ...]]] = {
    "llm_serving": (serving, SERVING),
    "recsys": (recsys, RECSYS),
    "llm_training": (training, TRAINING),
    "program": (program, PROGRAM),
}


def lower(raw: Any, index: int, origin: str, context: Context) -> Workload:
    """The workload of one `mix:` entry, lowered."""
    where = f"{origin}: mix[{index}]"
    if not isinstance(raw, dict):
        raise TapeoutError(f"{where}: expected a mapping with name, kind and weight")
    f = Fields(raw, where)
    name = f.text("name")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise TapeoutError(
            f"{where}: field 'name': {name!r} is not a lower-case name (letters, digits, - and _)"
        )
    f = Fields(raw, f"{origin}: mix '{name}'")
    what = f.text("kind")
    known = ", ".join(sorted(KINDS))
    if what not in KINDS:
        raise TapeoutError(f"{f.where}: field 'kind': unknown {what!r}; known: {known}")
    fn, own = KINDS[what]
    f.only((*COMMON, *own))
    return fn(f, name, f.number("weight", "(share of the mix's units)", default=1.0), context)
