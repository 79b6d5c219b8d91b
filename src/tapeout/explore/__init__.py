"""Design-space exploration: sweep a space of chip designs over a workload mix, keep every design
in a resumable store, and read the Pareto front (`docs/explore.md`).

>>> from tapeout.explore import load_space
>>> space = load_space("examples/explore-small.yaml")  # doctest: +SKIP
"""

from tapeout.explore.evaluate import Evaluator, Result
from tapeout.explore.run import Progress, Sweep, explore, show
from tapeout.explore.space import Space, load_space

__all__ = ["Evaluator", "Progress", "Result", "Space", "Sweep", "explore", "load_space", "show"]
