"""Energy per operation, for the power cap of sustained loads.

A matrix FLOP of a sustained load costs an effective energy per 16-bit FLOP on 5 nm-class
silicon (calibration figures: `serving_pj_per_flop` for serving iterations,
`training_pj_per_flop` for training steps; all of the FLOP-proportional work included), scaled
by operand width (8-bit inputs half, 4-bit a quarter: the datapaths are built
so that the doubled peak fits the same power) and by process node (TSMC: N5 draws about 30 %
less power than N7 at the same speed, N6 about 15 % less than N7, N4P 22 % less than N5 (TSMC
newsroom, 2021-10-26; NVIDIA's 4NP, Blackwell's node); N4 and N3 are taken as N5).
A DRAM byte costs `dram_pj_per_byte` (HBM2/HBM2e: about 3.9 pJ/bit, O'Connor et al., MICRO
2017, "Fine-Grained DRAM").
"""

from __future__ import annotations

from tapeout.hardware.spec import BYTES_PER_ELEMENT
from tapeout.perf.system import System

# Energy per operation relative to N5 (TSMC N5, N6 and N4P announcements: -30 % and -15 % power
# against N7, -22 % against N5, at iso-speed).
DVFS_EXPONENT = 3.0  # dynamic power ~ f V^2 with V ~ f: power ~ f^3 under a power cap
NODE_ENERGY = {"N7": 1 / 0.7, "N6": 0.85 / 0.7, "N12": 2.0, "N16": 2.0, "N4P": 0.78}


def energy_per_flop(system: System, precision: str, pj_per_16bit_flop: float) -> float:
    """Joules per matrix FLOP at `precision` on the system's chip, given the 16-bit figure."""
    width = min(2.0, BYTES_PER_ELEMENT[precision]) / 2.0
    node = NODE_ENERGY.get(system.chip.process_node or "N5", 1.0)
    return pj_per_16bit_flop * 1e-12 * width * node


def power_capped(system: System, busy_s: float, joules: float) -> float:
    """The time of `busy_s` of work at the clock the chip's TDP sustains.

    At full clocks the work would draw `joules / busy_s` watts above idle. When that exceeds
    the TDP's headroom, clocks drop to the fraction x where the draw fits: dynamic power goes as
    f V^2 and voltage tracks frequency in the DVFS range, so power scales as x^3 while time
    scales as 1/x, and the time is busy * (draw / headroom)^(1/3).
    """
    if busy_s <= 0:
        return busy_s
    headroom = system.chip.tdp_w * (1.0 - system.cal.idle_power_fraction)
    draw = joules / busy_s
    return busy_s if draw <= headroom else busy_s * (draw / headroom) ** (1.0 / DVFS_EXPONENT)
