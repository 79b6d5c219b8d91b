"""Energy of work, and the clock a power budget sustains. One model: the cost rules charge each
op's energy with it, the simulators cap a sustained load's power with it, and `tapeout.cost`
prices a chip's power at full load with it.

A matrix FLOP costs an effective energy per 16-bit FLOP on 5 nm-class silicon (calibration
figures: `serving_pj_per_flop` for serving loads, `training_pj_per_flop` for training steps;
all of the FLOP-proportional work included), scaled by operand width (8-bit inputs half, 4-bit a
quarter: the datapaths are built so that the doubled peak fits the same power) and by process
node (TSMC: N5 draws about 30 % less power than N7 at the same speed, N6 about 15 % less than
N7, N4P 22 % less than N5 (TSMC newsroom, 2021-10-26; NVIDIA's 4NP, Blackwell's node); N4 and N3
are taken as N5). A DRAM byte costs `dram_pj_per_byte` (HBM2/HBM2e: about 3.9 pJ/bit,
O'Connor et al., MICRO 2017, "Fine-Grained DRAM"). Link and network traffic are not charged.
"""

from __future__ import annotations

from typing import Literal

from tapeout.hardware.spec import ChipSpec
from tapeout.perf.calibration import Calibration
from tapeout.precision import BYTES_PER_ELEMENT

Load = Literal["serving", "training"]
# Energy per operation relative to N5 (TSMC N5, N6 and N4P announcements: -30 % and -15 % power
# against N7, -22 % against N5, at iso-speed).
DVFS_EXPONENT = 3.0  # dynamic power ~ f V^2 with V ~ f: power ~ f^3 under a power cap
NODE_ENERGY = {"N7": 1 / 0.7, "N6": 0.85 / 0.7, "N12": 2.0, "N16": 2.0, "N4P": 0.78}


def flop_energy(chip: ChipSpec, cal: Calibration, load: Load, precision: str) -> float:
    """Joules per FLOP at `precision` on `chip` under a sustained `load`."""
    pj = cal.training_pj_per_flop if load == "training" else cal.serving_pj_per_flop
    width = min(2.0, BYTES_PER_ELEMENT[precision]) / 2.0
    return pj * 1e-12 * width * NODE_ENERGY.get(chip.process_node or "N5", 1.0)


def dram_energy(cal: Calibration) -> float:
    """Joules per DRAM byte."""
    return cal.dram_pj_per_byte * 1e-12


def full_load_watts(chip: ChipSpec, cal: Calibration) -> tuple[float, float]:
    """(matrix units at their bf16 peak, DRAM at full bandwidth) in watts, at nominal clocks."""
    return (
        chip.peak_flops("bf16") * flop_energy(chip, cal, "serving", "bf16"),
        chip.memory_bandwidth * dram_energy(cal),
    )


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
