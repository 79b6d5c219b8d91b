"""Collective cost over a topology: ring, tree and in-switch reduction (NVLink SHARP) inside a
scale-up domain, and hierarchical across domains over the scale-out network.

Each algorithm is the usual alpha-beta model: steps x per-step latency + bytes on the busiest
wire / (bandwidth x the stack's link efficiency).
- ring: all_reduce sends 2(n-1)/n of the buffer per rank in 2(n-1) steps; all_gather,
  reduce_scatter and all_to_all (n-1)/n in n-1 steps (NCCL's ring, Patarasuk and Yuan 2009).
- tree: all_reduce as a pipelined reduce then broadcast, 2 S per rank in 2 log2(n) steps.
- nvls: all_reduce with the reduction done in the switch: each rank sends its buffer once and
  receives the result once (NVLink SHARP, NVIDIA Hopper whitepaper), at the in-switch
  efficiency.
- hierarchical (more ranks than one scale-up domain holds): reduce-scatter inside each domain,
  the inter-domain collective on 1/local of the data per rank over its NICs, all-gather inside;
  NCCL pipelines the phases in chunks, so their transfer times overlap and only the longer
  one counts, while their latencies add.
`auto` takes the fastest algorithm the hardware offers, as NCCL's tuner does.
"""

from __future__ import annotations

import math

from tapeout.errors import TapeoutError
from tapeout.perf.common import finish
from tapeout.perf.cost import Cost
from tapeout.perf.rules import cost_rule
from tapeout.perf.system import System
from tapeout.workloads.ops import Collective, OpKind

# Per-step latency of a network whose chip spec has no scale_out entry but whose bandwidth a
# case or study sets: the catalog's usual InfiniBand/RoCE figure.
DEFAULT_NETWORK_LATENCY_S = 10e-6


def _domain_bandwidth(system: System, ranks: int) -> float:
    """Per-direction bytes/s one rank can drive toward the other `ranks - 1` in its domain."""
    chip = system.chip
    up = chip.scale_up
    if up is None or ranks < 2:
        return 0.0
    bw = chip.link_bandwidth
    if up.topology == "full_mesh":
        # Point-to-point links to every peer: a collective over fewer chips uses fewer links.
        return bw * min(1.0, (ranks - 1) / max(1, chip.node.scale_up_domain_chips - 1))
    if up.topology in ("torus_2d", "torus_3d") and ranks == 2:
        dims = 2 if up.topology == "torus_2d" else 3
        return bw / (2 * dims)  # one neighbour link of 2 * dims
    return bw


def _steps(kind: OpKind, n: int) -> int:
    if kind == OpKind.SEND_RECV:
        return 1
    return 2 * (n - 1) if kind == OpKind.ALL_REDUCE else n - 1


def _intra(op: Collective, system: System, ranks: int, size: float, algorithm: str) -> tuple[float, float]:
    """(transfer seconds, latency seconds) of `op` on `size` bytes among `ranks` in one domain."""
    if ranks < 2:
        return 0.0, 0.0
    chip, cal = system.chip, system.cal
    bw = _domain_bandwidth(system, ranks)
    alpha = chip.scale_up.latency_us * 1e-6 if chip.scale_up else 0.0
    n = ranks
    if algorithm == "nvls":
        return size / (bw * cal.in_switch), 2 * alpha
    if algorithm == "tree":
        return 2 * size / (bw * cal.link), 2 * math.ceil(math.log2(n)) * alpha
    wire = {
        OpKind.ALL_REDUCE: 2 * (n - 1) / n * size,
        OpKind.SEND_RECV: size,
    }.get(op.kind, (n - 1) / n * size)
    return wire / (bw * cal.link), _steps(op.kind, n) * alpha


def _available(op: Collective, system: System) -> tuple[str, ...]:
    up = system.chip.scale_up
    algos = ["ring"]
    if op.kind == OpKind.ALL_REDUCE:
        algos.append("tree")
        if up is not None and up.in_switch_reduction and up.topology == "switch":
            algos.append("nvls")
    return tuple(algos)


def _inter(op: Collective, system: System, nodes: int, size: float) -> tuple[float, float]:
    """The scale-out phase: a ring among `nodes` ranks (one per domain) on `size` bytes."""
    if nodes < 2:
        return 0.0, 0.0
    chip = system.chip
    if system.nic_bandwidth <= 0:
        raise TapeoutError(
            f"{op.kind.value} over {op.ranks} chips needs a scale-out network: {chip.id} has "
            f"{system.scale_up_domain} chips per scale-up domain and no scale_out bandwidth"
        )
    alpha = chip.scale_out.latency_us * 1e-6 if chip.scale_out else DEFAULT_NETWORK_LATENCY_S
    n = nodes
    wire = {
        OpKind.ALL_REDUCE: 2 * (n - 1) / n * size,
        OpKind.SEND_RECV: size,
    }.get(op.kind, (n - 1) / n * size)
    return wire / (system.nic_bandwidth * system.cal.link), _steps(op.kind, n) * alpha


@cost_rule(OpKind.ALL_REDUCE, OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_TO_ALL, OpKind.SEND_RECV)
def collective_cost(op: Collective, system: System) -> Cost:
    """Cost of one collective; time is per rank, bytes are those each rank sends.

    >>> from tapeout.hardware import get_chip
    >>> from tapeout.workloads.ops import AllReduce
    >>> sys = System.of(get_chip("h100-sxm"), 8)
    >>> ring = collective_cost(AllReduce(ranks=8, bytes_per_rank=2**30, algorithm="ring"), sys)
    >>> auto = collective_cost(AllReduce(ranks=8, bytes_per_rank=2**30), sys)
    >>> auto.time_s < ring.time_s  # NVLink SHARP beats the ring on an NVSwitch node
    True
    """
    n = op.ranks
    if n > system.chips:
        raise TapeoutError(f"{op.kind.value} over {n} ranks on a system of {system.chips} chips")
    if n == 1 or op.bytes_per_rank == 0:
        return Cost()
    available = _available(op, system)
    if op.algorithm != "auto" and op.algorithm not in available:
        raise TapeoutError(
            f"algorithm {op.algorithm!r} is not available for {op.kind.value} on {system.chip.id}; "
            f"available: {', '.join(available)}"
        )
    algos = available if op.algorithm == "auto" else (op.algorithm,)
    local = min(n, system.scale_up_domain)
    nodes = -(-n // local)
    size = op.bytes_per_rank
    if op.kind == OpKind.SEND_RECV:
        local, nodes = (2, 1) if system.scale_up_domain >= 2 else (1, 2)
    best: tuple[float, float, float, float] | None = None  # transfer, latency, link, net bytes
    for algo in algos:
        if nodes == 1:
            transfer, lat = _intra(op, system, local, size, algo)
            net_bytes = 0.0
        else:
            if op.kind == OpKind.ALL_TO_ALL:  # 1/n of the buffer to each peer, near or far
                intra_s, intra_lat = _intra(op, system, local, size * local / n, algo)
                inter_s, inter_lat = _inter(op, system, nodes, size)
            else:
                intra_s, intra_lat = _intra(op, system, local, size, algo)
                inter_s, inter_lat = _inter(op, system, nodes, size / local)
            transfer, lat = max(intra_s, inter_s), intra_lat + inter_lat
            net_bytes = inter_s * system.nic_bandwidth * system.cal.link
        if best is None or transfer + lat < best[0] + best[1]:
            best = (transfer, lat, max(op.bytes - net_bytes, 0.0), net_bytes)
    assert best is not None
    transfer, lat, link_bytes, net_bytes = best
    return finish(
        system,
        network_s=transfer,
        overhead_s=lat,
        flops=op.flops,
        link_bytes=link_bytes,
        network_bytes=net_bytes,
    )
