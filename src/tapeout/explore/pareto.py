"""Pareto fronts over one, two or three objectives, with numpy.

A design dominates another when it is no worse on every objective and better on one. The front
is the designs no other dominates; `ranks` peels fronts one after another (non-dominated
sorting: rank 0 is the front, rank 1 the front of the rest...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def _minimised(values: Floats, directions: Sequence[str]) -> Floats:
    """Objectives as costs: maximised ones negated."""
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    out: Floats = np.asarray(values, dtype=np.float64) * sign
    return out


def front(values: Floats, directions: Sequence[str]) -> npt.NDArray[np.int64]:
    """Indices of the non-dominated rows of `values` (designs x objectives), in row order; rows
    with a non-finite value are never on it.

    >>> front(np.array([[1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [0.5, 6.0]]), ["max", "min"]).tolist()
    [1, 2]
    """
    costs = _minimised(values, directions)
    finite = np.flatnonzero(np.isfinite(costs).all(axis=1))
    if len(finite) == 0:
        return np.zeros(0, dtype=np.int64)
    c = costs[finite]
    order = np.lexsort(c.T[::-1])  # by the first objective, then the next: a dominator comes first
    kept: list[int] = []
    for i in order:
        if kept:
            k = c[kept]
            if np.any(np.all(k <= c[i], axis=1) & np.any(k < c[i], axis=1)):
                continue
        kept.append(int(i))
    return np.sort(finite[kept]).astype(np.int64)


def ranks(values: Floats, directions: Sequence[str]) -> npt.NDArray[np.int64]:
    """The front each row is on (0: the Pareto front); -1 for rows with a non-finite value.

    >>> ranks(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), ["min", "min"]).tolist()
    [0, 1, 2]
    """
    out = np.full(len(values), -1, dtype=np.int64)
    left = np.flatnonzero(np.isfinite(np.asarray(values, dtype=np.float64)).all(axis=1))
    rank = 0
    while len(left):
        on = left[front(values[left], directions)]
        out[on] = rank
        left = np.setdiff1d(left, on)
        rank += 1
    return out
