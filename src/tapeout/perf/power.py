"""Energy per operation, for the power cap of sustained loads.

A matrix FLOP of a serving iteration costs `serving_pj_per_flop` (a calibration figure: the
effective energy per 16-bit FLOP on 5 nm-class silicon, all of the iteration's FLOP-proportional
work included) scaled by operand width (8-bit inputs half, 4-bit a quarter: the datapaths are built
so that the doubled peak fits the same power) and by process node (TSMC: N5 draws about 30 %
less power than N7 at the same speed, N6 about 15 % less than N7; N4 and N3 are taken as N5).
A DRAM byte costs `dram_pj_per_byte` (HBM2/HBM2e: about 3.9 pJ/bit, O'Connor et al., MICRO
2017, "Fine-Grained DRAM").
"""

from __future__ import annotations

from tapeout.hardware.spec import BYTES_PER_ELEMENT
from tapeout.perf.system import System

# Energy per operation relative to N5 (TSMC N5 and N6 announcements: -30 % and -15 % power
# against N7 at iso-speed).
NODE_ENERGY = {"N7": 1 / 0.7, "N6": 0.85 / 0.7, "N12": 2.0, "N16": 2.0}


def energy_per_flop(system: System, precision: str) -> float:
    """Joules per matrix FLOP at `precision` on the system's chip."""
    width = min(2.0, BYTES_PER_ELEMENT[precision]) / 2.0
    node = NODE_ENERGY.get(system.chip.process_node or "N5", 1.0)
    return system.cal.serving_pj_per_flop * 1e-12 * width * node
