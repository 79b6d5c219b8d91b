"""A system: chips of one kind, how they are wired, and the efficiency figures they run with."""

from __future__ import annotations

from dataclasses import dataclass, field

from tapeout.errors import TapeoutError
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.calibration import Calibration, calibration_for
from tapeout.perf.energy import PJ, dram_pj_per_byte, flop_pj
from tapeout.perf.power import Load, power_capped


@dataclass(frozen=True, slots=True, kw_only=True)
class System:
    chip: ChipSpec
    chips: int
    chips_per_node: int
    scale_up_domain: int  # chips reachable over scale-up links
    nic_bandwidth: float  # bytes/s per direction per chip on the scale-out network
    cal: Calibration
    load: Load = "serving"  # what runs: sets the efficiency figure of matrix work (`efficiency`)
    _joules: dict[str, float] = field(default_factory=dict, compare=False, repr=False)  # per FLOP, by format

    @classmethod
    def of(
        cls,
        chip: ChipSpec,
        chips: int = 1,
        *,
        chips_per_node: int | None = None,
        scale_out_gbit_s_per_chip: float | None = None,
        calibration: Calibration | None = None,
        load: Load = "serving",
    ) -> System:
        """`chips` of `chip` in its default node, unless told otherwise.

        >>> from tapeout.hardware import get_chip
        >>> System.of(get_chip("h100-sxm"), 16).scale_up_domain
        8
        """
        if chips < 1:
            raise TapeoutError(f"field 'chips': must be >= 1, got {chips}")
        per_node = chips_per_node or chip.node.chips_per_node
        if per_node < 1:
            raise TapeoutError(f"field 'chips_per_node': must be >= 1, got {per_node}")
        # A scale-up domain spans nodes only where the catalog says so (NVL72, TPU pods).
        domain = chip.node.scale_up_domain_chips
        if chips_per_node is not None and domain == chip.node.chips_per_node:
            domain = per_node
        if scale_out_gbit_s_per_chip is not None and scale_out_gbit_s_per_chip < 0:
            raise TapeoutError(
                f"field 'network.scale_out_gbit_s_per_chip': must be >= 0, got {scale_out_gbit_s_per_chip} Gbit/s"
            )
        nic = (
            scale_out_gbit_s_per_chip * 1e9 / 8
            if scale_out_gbit_s_per_chip is not None
            else chip.nic_bandwidth
        )
        return cls(
            chip=chip,
            chips=chips,
            chips_per_node=per_node,
            scale_up_domain=min(domain, chips) if chip.scale_up else 1,
            nic_bandwidth=nic,
            cal=calibration or calibration_for(chip.family),
            load=load,
        )

    @property
    def efficiency(self) -> float:
        """The share of the kernel-level matrix rate a whole workload's matrix work reaches
        under its software (fusion gaps, synchronisation, scheduling): 1 for single kernels."""
        if self.load == "kernels":
            return 1.0
        return self.cal.training_efficiency if self.load == "training" else self.cal.serving_efficiency

    def energy(self, flops: float, precision: str | None, dram_bytes: float) -> float:
        """Joules of `flops` matrix FLOPs at `precision` (None: not charged) and `dram_bytes` of
        DRAM traffic, from the physical figures of `perf.energy`."""
        work = 0.0
        if precision and flops:
            per_flop = self._joules.get(precision)
            if per_flop is None:
                per_flop = self._joules[precision] = flop_pj(self.chip, precision) * PJ
            work = flops * per_flop
        dram = self._joules.get("dram")
        if dram is None:
            dram = self._joules["dram"] = dram_pj_per_byte(self.chip) * PJ
        return work + dram_bytes * dram

    def capped(self, busy_s: float, joules: float) -> float:
        """`busy_s` of work that spends `joules`, at the clock the chip's TDP sustains."""
        return power_capped(self.chip.tdp_w, self.cal.idle_power_fraction, busy_s, joules)
