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
    precision: str | None = None,
    dram_bytes: float = 0.0,
    sram_bytes: float = 0.0,
    link_bytes: float = 0.0,
    network_bytes: float = 0.0,
) -> Cost:
    """Compute, memory and network traffic overlap (a tuned kernel pipelines them); fixed
    overheads do not. The whole time goes to the largest of the four.

    Energy: the dynamic energy of the op's FLOPs at `precision` and of its DRAM traffic
    (`perf.power`); the idle draw is the power cap's business.
    """
    busy = max(compute_s, memory_s, network_s)
    time_s = busy + overhead_s
    # The limiter that took the most time (ties go to the first of compute, memory, network).
    bound: Bound = "compute"
    top = compute_s
    if memory_s > top:
        bound, top = "memory", memory_s
    if network_s > top:
        bound, top = "network", network_s
    if overhead_s > top:
        bound = "latency"
    return Cost(
        time_s=time_s,
        flops=flops,
        dram_bytes=dram_bytes,
        sram_bytes=sram_bytes,
        link_bytes=link_bytes,
        network_bytes=network_bytes,
        energy_j=system.energy(flops, precision, dram_bytes),
        compute_s=time_s if bound == "compute" else 0.0,
        memory_s=time_s if bound == "memory" else 0.0,
        network_s=time_s if bound == "network" else 0.0,
        latency_s=time_s if bound == "latency" else 0.0,
    )
