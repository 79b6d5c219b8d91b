"""What every cost rule does last: overlap the limiters, add fixed overheads, charge energy."""

from __future__ import annotations

from tapeout.perf.cost import Bound, Cost
from tapeout.perf.system import System


def finish(
    system: System,
    *,
    compute_s: float = 0.0,
    memory_s: float = 0.0,
    network_s: float = 0.0,
    overhead_s: float = 0.0,
    flops: float = 0.0,
    peak_flops: float = 0.0,
    dram_bytes: float = 0.0,
    sram_bytes: float = 0.0,
    link_bytes: float = 0.0,
    network_bytes: float = 0.0,
) -> Cost:
    """Compute, memory and network traffic overlap (a tuned kernel pipelines them); fixed
    overheads do not. The whole time goes to the largest of the four.

    Energy: the chip draws `idle_power_fraction` of TDP all along, and the rest of its TDP for
    as long as its busiest unit would need at its datasheet rate, so a kernel at peak compute
    or peak bandwidth draws TDP.
    """
    busy = max(compute_s, memory_s, network_s)
    time_s = busy + overhead_s
    parts: dict[Bound, float] = {
        "compute": compute_s,
        "memory": memory_s,
        "network": network_s,
        "latency": overhead_s,
    }
    bound = max(parts, key=lambda b: parts[b])
    chip = system.chip
    at_peak = max(
        flops / peak_flops if peak_flops > 0 else 0.0,
        dram_bytes / chip.memory_bandwidth,
    )
    idle = system.cal.idle_power_fraction
    energy = chip.tdp_w * (idle * time_s + (1.0 - idle) * min(at_peak, time_s))
    return Cost(
        time_s=time_s,
        flops=flops,
        dram_bytes=dram_bytes,
        sram_bytes=sram_bytes,
        link_bytes=link_bytes,
        network_bytes=network_bytes,
        energy_j=energy,
        **{f"{bound}_s": time_s},
    )
