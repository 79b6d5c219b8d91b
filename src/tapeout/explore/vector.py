"""The cost rules of `tapeout.perf`, evaluated for many designs at once.

A workload is lowered once to concrete ops; this module costs one op on a batch of designs with
numpy, each design a row: its peak per format, cores, matrix-unit shape, SRAM, DRAM bandwidth,
links, and the energy of its FLOPs and DRAM bytes. The semantics are those of the scalar rules
(`perf.matmul`, `perf.attention`, `perf.memory`, `perf.collective`, `perf.common.finish`), with
their constants, tile candidates and block counts imported from them; `tests/test_explore.py`
holds every rule here to `perf.rules.graph_cost` on each design's real `System`.

Rules are registered per op kind, as in `perf.rules`; a kind with no rule here fails by name.
Each returns (seconds, joules) per design.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.attention import BLOCK_KV, _block_q, _kv_block_counts
from tapeout.perf.calibration import Calibration
from tapeout.perf.collective import DEFAULT_NETWORK_LATENCY_S, _available, _domain_bandwidth, _steps
from tapeout.perf.energy import PJ, dram_pj_per_byte, flop_pj
from tapeout.perf.matmul import SPLIT_K_MIN_DEPTH, _tile_candidates
from tapeout.perf.power import Load, power_capped
from tapeout.perf.system import System
from tapeout.precision import BYTES_PER_ELEMENT
from tapeout.workloads.ops import Attention, Collective, Copy, Elementwise, Gather, Matmul, Op, OpKind, Reduce

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
OpT = TypeVar("OpT", bound=Op)
VectorRule = Callable[[Any, "Designs"], tuple[Floats, Floats]]
_RULES: dict[OpKind, VectorRule] = {}
_capped = np.frompyfunc(power_capped, 4, 1)


@dataclass(eq=False, kw_only=True)
class Designs:
    """What the cost rules read of each design, one entry per design, for one system size and one
    set of efficiency figures (`cal`, `load`). `joules` gives the energy of a FLOP per format
    (memoised per chip by the caller, as `System.energy` memoises it)."""

    chips: Sequence[ChipSpec]
    system_chips: int
    cal: Calibration
    load: Load
    joules_of: Callable[[int, str], float] | None = None
    _cache: dict[Any, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.chips)

    def _array(self, key: Any, fn: Callable[[ChipSpec], float]) -> Floats:
        out = self._cache.get(key)
        if out is None:
            out = self._cache[key] = np.array([fn(c) for c in self.chips], dtype=np.float64)
        return out

    @property
    def efficiency(self) -> float:
        """As `System.efficiency`: the share of the kernel rate a whole workload reaches."""
        if self.load == "kernels":
            return 1.0
        return self.cal.training_efficiency if self.load == "training" else self.cal.serving_efficiency

    def peak(self, precision: str) -> Floats:
        return self._array(("peak", precision), lambda c: c.peak_flops(precision))

    def joules(self, precision: str) -> Floats:
        """Joules of one matrix FLOP at `precision` (`perf.energy.flop_pj`)."""
        key = ("j", precision)
        out = self._cache.get(key)
        if out is None:
            of = self.joules_of or (lambda i, p: flop_pj(self.chips[i], p) * PJ)
            out = self._cache[key] = np.array([of(i, precision) for i in range(len(self.chips))])
        return out

    @cached_property
    def dram_joules(self) -> Floats:
        return self._array("dram_j", lambda c: dram_pj_per_byte(c) * PJ)

    @cached_property
    def cores(self) -> Ints:
        return np.array([c.num_cores for c in self.chips], dtype=np.int64)

    @cached_property
    def cores_f(self) -> Floats:
        return self.cores.astype(np.float64)

    @cached_property
    def memory_rate(self) -> Floats:
        """Bytes/s a streaming kernel sustains."""
        return self._array("bw", lambda c: c.memory_bandwidth) * self.cal.memory

    @cached_property
    def vector(self) -> Floats:
        return self._array("vec", lambda c: c.vector_flops)

    @cached_property
    def shared_sram(self) -> Floats:
        return self._array("l2", lambda c: c.sram_shared_bytes)

    @cached_property
    def all_shared_sram(self) -> bool:
        """Every design has shared SRAM (the matmul rule's L2 blocking applies to all)."""
        return bool((self.shared_sram > 0).all())

    @cached_property
    def rows(self) -> Ints:
        return np.arange(len(self.chips))

    @cached_property
    def granularity(self) -> Floats:
        return self._array("gran", lambda c: c.memory.access_granularity_bytes)

    @cached_property
    def tdp(self) -> Floats:
        return self._array("tdp", lambda c: c.tdp_w)

    def systems(self) -> list[System]:
        """Each design's real `System` (for the rules' per-chip helpers)."""
        key = "systems"
        if key not in self._cache:
            self._cache[key] = [
                System.of(c, self.system_chips, calibration=self.cal, load=self.load) for c in self.chips
            ]
        return self._cache[key]  # type: ignore[no-any-return]

    def tiles(self, bpe: float) -> tuple[Floats, Floats, npt.NDArray[np.bool_]]:
        """Tile candidates (`perf.matmul._tile_candidates`) per design, padded to the longest
        list: tile rows, tile columns, and which entries are candidates."""
        key = ("tiles", bpe)
        if key not in self._cache:
            rows = [_tile_row(c, bpe) for c in self.chips]
            width = max(len(r[0]) for r in rows)
            tm, tn = np.ones((len(rows), width)), np.ones((len(rows), width))
            valid = np.zeros((len(rows), width), bool)
            for i, (a, b) in enumerate(rows):
                tm[i, : len(a)], tn[i, : len(a)], valid[i, : len(a)] = a, b, True
            self._cache[key] = (tm, tn, valid)
        return self._cache[key]  # type: ignore[no-any-return]

    def capped(self, busy_s: Floats, joules: Floats, rows: Sequence[int] | None = None) -> Floats:
        """`perf.power.power_capped` per design (of `rows` only, when given): the time at the
        clock the TDP sustains."""
        tdp = self.tdp if rows is None else self.tdp[rows]
        out = _capped(tdp, self.cal.idle_power_fraction, busy_s, joules)
        return np.asarray(out, dtype=np.float64)


_TILES: dict[tuple[int, int, float, float], tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _tile_row(chip: ChipSpec, bpe: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A chip's tile candidates as (rows, columns), by matrix-unit shape and SRAM per core."""
    mu = chip.matrix_unit
    key = (mu.rows if mu else 64, mu.cols if mu else 64, chip.sram_per_core_bytes, bpe)
    got = _TILES.get(key)
    if got is None:
        tiles = _tile_candidates(*key)
        got = _TILES[key] = (tuple(a for a, _ in tiles), tuple(b for _, b in tiles))
    return got


def vector_rule(*kinds: OpKind) -> Callable[[Callable[[OpT, Designs], tuple[Floats, Floats]]], Any]:
    def register(fn: Callable[[OpT, Designs], tuple[Floats, Floats]]) -> Any:
        for kind in kinds:
            _RULES[kind] = fn
        return fn

    return register


def op_costs(op: Op, d: Designs) -> tuple[Floats, Floats]:
    """(seconds, joules) of one op on every design."""
    rule = _RULES.get(op.kind)
    if rule is None:
        raise TapeoutError(
            f"no batch cost rule for op {op.name or type(op).__name__!r} of kind {op.kind.value}"
        )
    return rule(op, d)


STREAMS = frozenset({OpKind.ELEMENTWISE, OpKind.REDUCE, OpKind.COPY, OpKind.GATHER})


def total(
    ops: Iterable[tuple[Op, float]], d: Designs, seen: dict[Op, tuple[Floats, Floats]]
) -> tuple[Floats, Floats]:
    """(seconds, joules) of ops that run one after another, each `count` times; `seen` keeps the
    costs of ops already costed on these designs. The memory-bound ops are costed together, one
    row per op (`_streams`)."""
    t, e = np.zeros(len(d)), np.zeros(len(d))
    streams = []
    for op, count in ops:
        if op.kind in STREAMS:
            streams.append((op, count))
            continue
        got = seen.get(op)
        if got is None:
            got = seen[op] = op_costs(op, d)
        t += count * got[0]
        e += count * got[1]
    if streams:
        st, se = _streams(streams, d)
        t, e = t + st, e + se
    return t, e


def _streams(ops: list[tuple[Op, float]], d: Designs) -> tuple[Floats, Floats]:
    """`_stream` of many memory-bound ops at once, summed with their counts: the ops' bytes and
    FLOPs as rows, the designs as columns."""
    dram = np.empty((len(ops), len(d)))
    flops = np.array([op.flops for op, _ in ops])
    work = np.zeros((len(ops), len(d)))
    for i, (op, _) in enumerate(ops):
        dram[i] = _moved(op, d) if isinstance(op, Gather) else op.bytes
        precision = getattr(op, "precision", None)
        if precision and flops[i]:
            work[i] = flops[i] * d.joules(precision)
    counts = np.array([c for _, c in ops])
    time = np.maximum(flops[:, None] / d.vector, dram / d.memory_rate) + d.cal.kernel_overhead_us * 1e-6
    return counts @ time, counts @ (work + dram * d.dram_joules)


def _finish(d: Designs, compute: Floats, memory: Floats, overhead: float) -> Floats:
    """`perf.common.finish`'s time: compute and memory overlap, fixed overheads add."""
    return np.maximum(compute, memory) + overhead


@vector_rule(OpKind.MATMUL)
def _matmul(op: Matmul, d: Designs) -> tuple[Floats, Floats]:
    """`perf.matmul._matmul_cost` over every design and tile candidate; the fastest candidate wins
    (the first of equals, as the scalar rule's loop keeps it)."""
    p, cal = op.precision, d.cal
    bpe, bpe_w = BYTES_PER_ELEMENT[p], BYTES_PER_ELEMENT[op.weight_precision or p]
    bpe_out = BYTES_PER_ELEMENT[op.out_precision]
    m, n, k, g = op.m, op.n, op.k, op.groups
    # Whole numbers are held as floats: their quotients' floors and ceilings are exact below 2^53.
    cores = d.cores_f[:, None]
    core_rate = (d.peak(p) * cal.matmul(p) * d.efficiency / d.cores)[:, None]
    l2 = d.shared_sram[:, None]
    tm, tn, valid = d.tiles(bpe)
    a_bytes, b_bytes, c_bytes = m * k * bpe, k * n * bpe_w, m * n * bpe_out
    l2_side = np.where(l2 > 0, l2 / 2 / (2 * k * bpe), 0.0)
    m_tiles, n_tiles = np.ceil(m / tm), np.ceil(n / tn)
    out_tiles = m_tiles * n_tiles * g
    few = out_tiles < cores
    splits = np.where(few, np.minimum(np.floor(cores / out_tiles), k // SPLIT_K_MIN_DEPTH), 1.0)
    splits = np.maximum(splits, 1.0)
    waves = np.ceil(out_tiles * splits / cores)
    area = tm * tn
    compute = waves * 2.0 * area * (k / splits) / core_rate
    side = np.maximum(np.sqrt(np.where(few, out_tiles, cores) * area), l2_side)
    span_m, span_n = m_tiles * tm, n_tiles * tn
    bm = np.where(span_m < side, span_m, np.maximum(side, tm))
    bn = np.where(span_n < side, span_n, np.maximum(side, tn))
    if not d.all_shared_sram:
        bm, bn = np.where(l2 > 0, bm, tm), np.where(l2 > 0, bn, tn)
    traffic = g * (a_bytes * np.ceil(n / bn) + b_bytes * np.ceil(m / bm) + c_bytes)
    traffic = traffic + np.where(splits > 1, g * 2 * splits * m * n * 4, 0)
    memory = traffic / d.memory_rate[:, None]
    t = np.where(valid, np.maximum(compute, memory), np.inf)
    rows, best = d.rows, np.argmin(t, axis=1)
    compute, memory, traffic = compute[rows, best], memory[rows, best], traffic[rows, best]
    time = _finish(d, compute, memory, cal.kernel_overhead_us * 1e-6)
    return time, op.flops * d.joules(p) + traffic * d.dram_joules


@vector_rule(OpKind.ATTENTION)
def _attention(op: Attention, d: Designs) -> tuple[Floats, Floats]:
    """`perf.attention._attention_cost`: the block counts are the op's own; the split over
    idle cores, the block rate and the DRAM rate are each design's."""
    cal = d.cal
    group = op.heads // op.kv_heads
    n_q, visits, longest = _kv_block_counts(op.q_len, op.kv_len, group, op.causal)
    ctas = op.batch * op.kv_heads * n_q
    cores = d.cores
    splits = np.where(ctas < cores, np.maximum(1, np.minimum(cores // ctas, longest)), 1)
    work = op.batch * op.kv_heads * visits + ctas * splits * cal.attention_overhead_blocks
    critical = np.ceil(longest / splits) + cal.attention_overhead_blocks
    block_flops = (
        2.0 * _block_q(op.q_len * group) * BLOCK_KV * (op.head_dim + op.dv) * (2.5 if op.backward else 1.0)
    )
    block_s = block_flops / (d.peak(op.precision) * cal.attention * d.efficiency / cores)
    compute = np.maximum(work / cores, critical) * block_s
    extra = np.where(splits > 1, 2 * splits * op.batch * op.q_len * op.heads * (op.dv + 2) * 4, 0)
    dram = op.bytes + extra
    overhead = cal.kernel_overhead_us * 1e-6 * (3 if op.backward else 1)
    time = _finish(d, compute, dram / d.memory_rate, overhead)
    return time, op.flops * d.joules(op.precision) + dram * d.dram_joules


def _stream(
    d: Designs, dram_bytes: float | Floats, flops: float, precision: str | None
) -> tuple[Floats, Floats]:
    """`perf.memory._stream`: bytes at the sustained DRAM rate unless the vector math is slower."""
    time = _finish(d, flops / d.vector, dram_bytes / d.memory_rate, d.cal.kernel_overhead_us * 1e-6)
    work = flops * d.joules(precision) if precision and flops else 0.0
    return time, work + dram_bytes * d.dram_joules


@vector_rule(OpKind.ELEMENTWISE, OpKind.REDUCE)
def _elementwise(op: Elementwise | Reduce, d: Designs) -> tuple[Floats, Floats]:
    return _stream(d, op.bytes, op.flops, op.precision)


@vector_rule(OpKind.COPY)
def _copy(op: Copy, d: Designs) -> tuple[Floats, Floats]:
    return _stream(d, op.bytes, 0.0, None)


@vector_rule(OpKind.GATHER)
def _gather(op: Gather, d: Designs) -> tuple[Floats, Floats]:
    return _stream(d, _moved(op, d), op.flops, op.precision)


def _moved(op: Gather, d: Designs) -> Floats:
    """`perf.memory.gather_cost`'s DRAM bytes: rows move in whole access granules; cached rows
    move none."""
    gran = d.granularity
    row = op.dim * BYTES_PER_ELEMENT[op.precision]
    moved: Floats = (1.0 - op.cached) * op.lookups * (-(-row // gran) * gran) + op.outputs * row
    return moved


@vector_rule(OpKind.ALL_REDUCE, OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_TO_ALL, OpKind.SEND_RECV)
def _collective(op: Collective, d: Designs) -> tuple[Floats, Floats]:
    """`perf.collective.collective_cost`: the fastest available algorithm per design. A
    collective moves no DRAM bytes and charges no FLOP energy there, so its joules are zero."""
    zero = np.zeros(len(d))
    n = op.ranks
    if n > d.system_chips:
        raise TapeoutError(f"{op.kind.value} over {n} ranks on a system of {d.system_chips} chips")
    if n == 1 or op.bytes_per_rank == 0:
        return zero, zero
    systems = d.systems()
    first = systems[0]
    domain = first.scale_up_domain  # the node's shape is the base design's, the same for all
    local = min(n, domain)
    nodes = -(-n // local)
    size = op.bytes_per_rank
    if op.kind == OpKind.SEND_RECV:
        local, nodes = (2, 1) if domain >= 2 else (1, 2)
    algos = _available(op, first) if op.algorithm == "auto" else (op.algorithm,)
    best_t, best_l = np.full(len(d), np.inf), zero
    for algo in algos:
        if nodes == 1:
            transfer, lat = _intra(op, d, systems, local, size, algo)
        else:
            intra_size, inter_size = (
                (size * local / n, size) if op.kind == OpKind.ALL_TO_ALL else (size, size / local)
            )
            intra_s, intra_lat = _intra(op, d, systems, local, intra_size, algo)
            inter_s, inter_lat = _inter(op, d, systems, nodes, inter_size)
            transfer, lat = np.maximum(intra_s, inter_s), intra_lat + inter_lat
        better = transfer + lat < best_t + best_l
        best_t, best_l = np.where(better, transfer, best_t), np.where(better, lat, best_l)
    return best_t + best_l, zero


def _intra(op: Collective, d: Designs, systems: list[System], ranks: int, size: float, algo: str
           ) -> tuple[Floats, Floats]:  # fmt: skip
    """`perf.collective._intra` per design: transfer and latency seconds inside one domain."""
    zero = np.zeros(len(d))
    if ranks < 2:
        return zero, zero
    bw = _per_system(d, ("bw", ranks), systems, lambda s: _domain_bandwidth(s, ranks))
    alpha = _per_system(
        d, "alpha", systems, lambda s: s.chip.scale_up.latency_us * 1e-6 if s.chip.scale_up else 0.0
    )
    cal, n = d.cal, ranks
    if algo == "nvls":
        return size / (bw * cal.in_switch), 2 * alpha
    if algo == "tree":
        return 2 * size / (bw * cal.link), 2 * int(np.ceil(np.log2(n))) * alpha
    wire = {OpKind.ALL_REDUCE: 2 * (n - 1) / n * size, OpKind.SEND_RECV: size}.get(
        op.kind, (n - 1) / n * size
    )
    return wire / (bw * cal.link), _steps(op.kind, n) * alpha


def _inter(
    op: Collective, d: Designs, systems: list[System], nodes: int, size: float
) -> tuple[Floats, Floats]:
    """`perf.collective._inter` per design: the scale-out phase, a ring among `nodes` ranks."""
    nic = _per_system(d, "nic", systems, lambda s: s.nic_bandwidth)
    if np.any(nic <= 0):
        raise TapeoutError(
            f"{op.kind.value} over {op.ranks} chips needs a scale-out network: the design has "
            f"{systems[0].scale_up_domain} chips per scale-up domain and no scale_out bandwidth"
        )
    alpha = _per_system(
        d, "nic_alpha", systems,
        lambda s: s.chip.scale_out.latency_us * 1e-6 if s.chip.scale_out else DEFAULT_NETWORK_LATENCY_S,
    )  # fmt: skip
    n = nodes
    wire = {OpKind.ALL_REDUCE: 2 * (n - 1) / n * size, OpKind.SEND_RECV: size}.get(
        op.kind, (n - 1) / n * size
    )
    return wire / (nic * d.cal.link), _steps(op.kind, n) * alpha


def _per_system(d: Designs, key: Any, systems: list[System], fn: Callable[[System], float]) -> Floats:
    out = d._cache.get(key)
    if out is None:
        out = d._cache[key] = np.array([fn(s) for s in systems], dtype=np.float64)
    return out
