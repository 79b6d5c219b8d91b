"""Matmul cost: output tiles on the chip's cores, wave quantization, DRAM traffic given on-chip
SRAM, and the per-precision peak.

The model follows how tuned GEMM libraries (cuBLAS, CUTLASS, hipBLASLt, XLA) run a product:
the m x n output is cut into tiles of tm x tn (multiples of the matrix unit, small enough that
a double-buffered k-slice of both operands fits in one core's SRAM); tiles run in waves of
`num_cores`, so a last, partial wave costs a full one; a tile's time is its FLOPs at one core's
share of the peak (times the stack's matmul efficiency). Operands come from DRAM once per block
of output served from the shared SRAM (the L2 of a GPU): the tiles of one wave, or as large a
block as half the SRAM can hold full-k operand panels for; without shared SRAM each tile
re-reads its panels. Small products split k across idle cores (split-K) and pay for the partial
sums. Like the libraries' heuristics, the rule picks the fastest of these few candidates; it is
one mapping evaluated per candidate, not a search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from tapeout.perf.common import finish
from tapeout.perf.cost import Cost
from tapeout.perf.rules import cost_rule
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT
from tapeout.workloads.ops import Matmul, OpKind

K_SLICE = 64  # k-depth of one pipeline stage of a tile (CUTLASS's common 64)
STAGES = 2  # double buffering
SPLIT_K_MIN_DEPTH = 256  # no split leaves a core less than this much k


@lru_cache(maxsize=256)
def _tile_candidates(rows: int, cols: int, sram_per_core: float, bpe: float) -> tuple[tuple[int, int], ...]:
    r, c = max(64, rows), max(64, cols)
    tiles = [(a * r, b * c) for a in (1, 2, 4) for b in (1, 2, 4) if a * r <= 512 and b * c <= 512]
    fits = [(tm, tn) for tm, tn in tiles if (tm + tn) * K_SLICE * bpe * STAGES <= sram_per_core]
    return tuple(fits or [min(tiles, key=lambda t: t[0] * t[1])])


@cost_rule(OpKind.MATMUL)
def matmul_cost(op: Matmul, system: System) -> Cost:
    """Cost of `groups` m x n x k products.

    >>> from tapeout.hardware import get_chip
    >>> sys = System.of(get_chip("a100-sxm-80gb"))
    >>> c = matmul_cost(Matmul(m=8192, n=8192, k=8192), sys)
    >>> c.flops == 2 * 8192**3 and 0.5 < c.achieved_flops / 312e12 < 1.0
    True
    """
    return _matmul_cost(
        op.m, op.n, op.k, op.groups, op.precision, op.out_precision, op.weight_precision, system
    )


@lru_cache(maxsize=1024)
def _setup(
    system: System, precision: str
) -> tuple[float, float, float, float, int, tuple[tuple[int, int], ...]]:
    """Per chip and precision: peak, one core's matmul rate, DRAM rate, shared SRAM, cores, tiles."""
    chip = system.chip
    peak = chip.peak_flops(precision)
    cores = chip.num_cores
    mu = chip.matrix_unit
    bpe = BYTES_PER_ELEMENT[precision]
    tiles = _tile_candidates(mu.rows if mu else 64, mu.cols if mu else 64, chip.sram_per_core_bytes, bpe)
    core_rate = peak * system.cal.matmul(precision) * system.efficiency / cores
    return peak, core_rate, chip.memory_bandwidth * system.cal.memory, chip.sram_shared_bytes, cores, tiles


@dataclass(frozen=True, slots=True)
class Tiling:
    """How the rule runs a product: output tiles of `m` x `n`, the reduction split `k_split`
    ways (split-K), `tiles` tile-slices in `waves` waves over the cores; `utilization` is the
    share of the tiles' MACs that are real (edge tiles pad the rest)."""

    m: int
    n: int
    k: int  # reduction depth of one tile-slice
    k_split: int
    tiles: int
    waves: int
    utilization: float


@lru_cache(maxsize=1024)
def _plan(
    m: int, n: int, k: int, groups: int, precision: str, out_precision: str, weight_precision: str | None,
    system: System,
) -> tuple[Tiling, float, float, float, float]:  # fmt: skip
    """The fastest candidate tiling, with its compute and memory seconds, DRAM and SRAM bytes."""
    _, core_rate, mem_rate, l2, cores, tiles = _setup(system, precision)
    bpe = BYTES_PER_ELEMENT[precision]
    bpe_w = BYTES_PER_ELEMENT[weight_precision or precision]
    bpe_out = BYTES_PER_ELEMENT[out_precision]

    a_bytes, b_bytes, c_bytes = m * k * bpe, k * n * bpe_w, m * n * bpe_out
    # The largest output block half the shared SRAM can hold as full-k panels of A and B.
    l2_side = l2 / 2 / (2 * k * bpe) if l2 > 0 else 0.0
    best: tuple[float, Tiling, float, float, float, float] | None = None
    for tm, tn in tiles:
        m_tiles, n_tiles = -(-m // tm), -(-n // tn)
        out_tiles = m_tiles * n_tiles * groups
        splits = 1
        if out_tiles < cores:
            splits = min(cores // out_tiles, k // SPLIT_K_MIN_DEPTH)
            splits = splits if splits > 1 else 1
        waves = -(-out_tiles * splits // cores)
        compute = waves * 2.0 * tm * tn * (k / splits) / core_rate
        if l2 > 0:
            # The output block whose operand panels the shared SRAM serves: at least the tiles
            # of one wave (they run together), and as much as half the SRAM can hold as full-k
            # panels of A and B (kept across waves by a raster-order schedule).
            side = math.sqrt((out_tiles if out_tiles < cores else cores) * tm * tn)
            side = side if side > l2_side else l2_side
            bm = m_tiles * tm if m_tiles * tm < side else (side if side > tm else tm)
            bn = n_tiles * tn if n_tiles * tn < side else (side if side > tn else tn)
        else:
            bm, bn = tm, tn
        traffic = groups * (a_bytes * math.ceil(n / bn) + b_bytes * math.ceil(m / bm) + c_bytes)
        if splits > 1:  # partial sums in fp32, written and read back once
            traffic += groups * 2 * splits * m * n * 4
        memory = traffic / mem_rate
        t = compute if compute > memory else memory
        if best is None or t < best[0]:
            # every tile streams its A and B panels through the cores from the shared SRAM
            panels = out_tiles * (tm * bpe + tn * bpe_w) * k if l2 > 0 else 0.0
            tiling = Tiling(tm, tn, -(-k // splits), splits, out_tiles * splits, waves,
                            m * n * groups / (out_tiles * tm * tn))  # fmt: skip
            best = (t, tiling, compute, memory, traffic, panels)
    assert best is not None
    return best[1:]


def matmul_tiling(op: Matmul, system: System) -> Tiling:
    """The tiling `matmul_cost` times `op` with on `system` (what a compiler would emit).

    >>> from tapeout.hardware import get_chip
    >>> t = matmul_tiling(Matmul(m=4096, n=4096, k=4096), System.of(get_chip("h100-sxm")))
    >>> t.tiles == -(-4096 // t.m) * -(-4096 // t.n) and t.k_split == 1
    True
    """
    return _plan(op.m, op.n, op.k, op.groups, op.precision, op.out_precision, op.weight_precision, system)[0]


@lru_cache(maxsize=65536)
def _matmul_cost(
    m: int,
    n: int,
    k: int,
    groups: int,
    precision: str,
    out_precision: str,
    weight_precision: str | None,
    system: System,
) -> Cost:
    _, compute, memory, traffic, panels = _plan(
        m, n, k, groups, precision, out_precision, weight_precision, system
    )
    return finish(
        system,
        compute_s=compute,
        memory_s=memory,
        overhead_s=system.cal.kernel_overhead_us * 1e-6,
        flops=2.0 * m * n * k * groups,
        precision=precision,
        dram_bytes=traffic,
        sram_bytes=panels,
    )
