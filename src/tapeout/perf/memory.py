"""Memory-bound ops: elementwise maps, row reductions (norms, softmax), embedding gathers and
copies. Each streams its bytes at the stack's achievable fraction of the DRAM bandwidth, unless
its arithmetic on the vector units takes longer."""

from __future__ import annotations

from tapeout.perf.common import finish
from tapeout.perf.cost import Cost
from tapeout.perf.rules import cost_rule
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT
from tapeout.workloads.ops import Copy, Elementwise, Gather, OpKind, Reduce


def _stream(system: System, dram_bytes: float, flops: float, precision: str | None) -> Cost:
    chip, cal = system.chip, system.cal
    return finish(
        system,
        compute_s=flops / chip.vector_flops,
        memory_s=dram_bytes / (chip.memory_bandwidth * cal.memory),
        overhead_s=cal.kernel_overhead_us * 1e-6,
        flops=flops,
        precision=precision,
        dram_bytes=dram_bytes,
    )


@cost_rule(OpKind.ELEMENTWISE, OpKind.REDUCE)
def stream_cost(op: Elementwise | Reduce, system: System) -> Cost:
    """STREAM-like kernels.

    >>> from tapeout.hardware import get_chip
    >>> sys = System.of(get_chip("h100-sxm"))
    >>> c = stream_cost(Elementwise(elements=2**28, reads=2, writes=1, precision="fp32"), sys)
    >>> c.bound, c.dram_bytes == 3 * 4 * 2**28
    ('memory', True)
    """
    return _stream(system, op.bytes, op.flops, op.precision)


@cost_rule(OpKind.GATHER)
def gather_cost(op: Gather, system: System) -> Cost:
    """Random row reads move whole access granules: a 100-byte row on 64-byte bursts moves 128.
    Lookups of hot rows cached on chip cost no DRAM traffic."""
    gran = system.chip.memory.access_granularity_bytes
    row = op.dim * BYTES_PER_ELEMENT[op.precision]
    moved = (1.0 - op.cached) * op.lookups * (-(-row // gran) * gran) + op.outputs * row
    return _stream(system, moved, op.flops, op.precision)


@cost_rule(OpKind.COPY)
def copy_cost(op: Copy, system: System) -> Cost:
    return _stream(system, op.bytes, 0.0, None)
