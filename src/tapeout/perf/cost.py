"""`Cost`: the one result every cost rule returns. Frozen, and additive: the cost of a graph is
the sum of its ops' costs, and `n * cost` is n repetitions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal

Bound = Literal["compute", "memory", "network", "latency"]
BOUNDS: tuple[Bound, ...] = ("compute", "memory", "network", "latency")


@dataclass(frozen=True, slots=True, kw_only=True)
class Cost:
    """Time, work and traffic of one or more ops.

    `time_s` is split by what bounds it: an op's whole time goes to its limiter (compute,
    memory, network, or fixed latency), so the parts always sum to `time_s` and the bound of
    a sum is the limiter that took most of its time.

    >>> a = Cost(time_s=2.0, flops=10.0, compute_s=2.0)
    >>> b = Cost(time_s=1.0, dram_bytes=8.0, memory_s=1.0)
    >>> (a + b).time_s, (a + b).bound, (3 * b).dram_bytes
    (3.0, 'compute', 24.0)
    """

    time_s: float = 0.0
    flops: float = 0.0
    dram_bytes: float = 0.0  # off-chip memory (HBM, GDDR, LPDDR)
    sram_bytes: float = 0.0  # on-chip shared SRAM (L2, global buffer) beyond what DRAM serves
    link_bytes: float = 0.0  # scale-up links (NVLink, ICI, xGMI), sent per chip
    network_bytes: float = 0.0  # scale-out NICs, sent per chip
    energy_j: float = 0.0
    compute_s: float = 0.0
    memory_s: float = 0.0
    network_s: float = 0.0
    latency_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost.total((self, other))

    def __mul__(self, times: float) -> Cost:
        return Cost.total((self,), times)

    __rmul__ = __mul__

    @classmethod
    def total(cls, costs: Iterable[Cost], times: float = 1.0) -> Cost:
        """The sum of many costs (each repeated `times`), in one pass. Written out field by
        field: this is the innermost loop of every simulation."""
        t = fl = dram = sram = link = net = e = cs = ms = ns = ls = 0.0
        for c in costs:
            t += c.time_s
            fl += c.flops
            dram += c.dram_bytes
            sram += c.sram_bytes
            link += c.link_bytes
            net += c.network_bytes
            e += c.energy_j
            cs += c.compute_s
            ms += c.memory_s
            ns += c.network_s
            ls += c.latency_s
        if times != 1.0:
            t, fl, dram, sram, link, net = (
                t * times,
                fl * times,
                dram * times,
                sram * times,
                link * times,
                net * times,
            )
            e, cs, ms, ns, ls = e * times, cs * times, ms * times, ns * times, ls * times
        return cls(time_s=t, flops=fl, dram_bytes=dram, sram_bytes=sram, link_bytes=link, network_bytes=net,
                   energy_j=e, compute_s=cs, memory_s=ms, network_s=ns, latency_s=ls)  # fmt: skip

    @property
    def bound(self) -> Bound:
        parts = {b: getattr(self, f"{b}_s") for b in BOUNDS}
        return max(parts, key=lambda b: parts[b])

    @property
    def achieved_flops(self) -> float:
        return self.flops / self.time_s if self.time_s > 0 else 0.0

    @classmethod
    def of(cls, time_s: float, bound: Bound, **work: float) -> Cost:
        """A cost whose whole time is attributed to `bound`."""
        return cls(time_s=time_s, **{f"{bound}_s": time_s}, **work)

    def as_dict(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {f.name: getattr(self, f.name) for f in fields(Cost)}
        out["bound"] = self.bound
        return out


ZERO = Cost()
