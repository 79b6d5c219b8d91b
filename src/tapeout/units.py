"""Units and constants. Every quantity in tapeout is SI at the API (seconds, bytes, FLOP, watts);
spec fields carry their display unit in their name (``hbm_bandwidth_gb_s``) and are converted
here, once."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

# A quantity of one chip, or one per design of a batch (the explorer's batch path runs the same
# cost rules over arrays).
Num: TypeAlias = float | npt.NDArray[np.float64]

KIB = 1024
MIB = 1024**2
GB = 1e9
TERA = 1e12

# Field-name suffix -> the unit it promises; used to name the unit in error messages.
_SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_gbit_s", "Gbit/s"),
    ("_per_s", "per second"),
    ("_gb_s", "GB/s (1e9 bytes per second)"),
    ("_tflops", "TFLOP/s (1e12 per second)"),
    ("_tops", "tera-operations per second"),
    ("_mm2", "mm^2"),
    ("_ghz", "GHz"),
    ("_mib", "MiB"),
    ("_kib", "KiB"),
    ("_gb", "GB (1e9 bytes)"),
    ("_bytes", "bytes"),
    ("_usd", "US dollars"),
    ("_w", "W"),
    ("_us", "microseconds"),
    ("_s", "seconds"),
    ("_nm", "nm"),
    ("_pj_per_bit", "pJ/bit"),
)


def unit_of(field: str) -> str | None:
    """The unit a field name promises, from its suffix.

    >>> unit_of("hbm_bandwidth_gb_s")
    'GB/s (1e9 bytes per second)'
    """
    for suffix, unit in _SUFFIX_UNITS:
        if field.endswith(suffix):
            return unit
    return None
