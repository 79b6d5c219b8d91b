"""The clock a power budget sustains. Work's energy comes from physics (`perf.energy`: sourced
figures per FLOP, SRAM and wire byte and DRAM bit, nothing fitted to throughput); when a
sustained load would draw more than the TDP leaves above idle, clocks drop by the DVFS law here.
The simulators cap their iterations and steps with it, and `tapeout.cost` reports the clock a
full matrix load sustains.
"""

from __future__ import annotations

from typing import Literal

# What a system runs, which sets the efficiency figure its matrix work takes (`System.efficiency`):
# single kernels (the op cases), serving iterations, or training steps.
Load = Literal["kernels", "serving", "training"]
DVFS_EXPONENT = 3.0  # dynamic power ~ f V^2 with V ~ f: power ~ f^3 under a power cap


def power_capped(tdp_w: float, idle_fraction: float, busy_s: float, joules: float) -> float:
    """The time of `busy_s` of work at the clock a TDP of `tdp_w` sustains.

    At full clocks the work would draw `joules / busy_s` watts above idle. When that exceeds
    the TDP's headroom, clocks drop to the fraction x where the draw fits: dynamic power goes as
    f V^2 and voltage tracks frequency in the DVFS range, so power scales as x^3 while time
    scales as 1/x, and the time is busy * (draw / headroom)^(1/3).

    >>> power_capped(700.0, 0.25, 1.0, 525.0 * 8)
    2.0
    """
    if busy_s <= 0:
        return busy_s
    headroom = tdp_w * (1.0 - idle_fraction)
    draw = joules / busy_s
    return busy_s if draw <= headroom else busy_s * (draw / headroom) ** (1.0 / DVFS_EXPONENT)
