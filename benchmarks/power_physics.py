"""Power from physical energy figures against the TDP of chips measured at their GEMM ceiling.

For every public MAMF case (`op-mamf-*`: the best sustained dense GEMM throughput found on a
chip), prints the power `perf.energy` models at that throughput (FLOP energy x throughput, the
DRAM traffic of that GEMM, idle power) against the TDP, which those chips run capped at. Then
the clock each catalog chip and design sustains within its TDP under a dense GEMM at peak.

Targets: modelled power within 20 % of TDP for every MAMF case; sustained bf16 clock >= 0.75 on
h100-sxm and >= 0.8 on a100-sxm-80gb. Run: `OMP_NUM_THREADS=1 python benchmarks/power_physics.py`.
Reports; nothing is asserted here (tests/test_energy.py holds the assertions).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tapeout.errors import TapeoutError
from tapeout.hardware import all_chips
from tapeout.perf.energy import (
    dram_pj_per_byte,
    flop_energy,
    gemm_dram_bytes,
    idle_watts,
    power_watts,
    sustained_clock,
)
from tapeout.validate import PUBLIC_CASES, load_cases

TOLERANCE = 0.20
CLOCK_TARGETS = {"h100-sxm": 0.75, "a100-sxm-80gb": 0.8}


def mamf_table() -> int:
    """Print the MAMF power table; return how many cases miss the target."""
    cases = [c for c in load_cases(PUBLIC_CASES) if c.kind == "gemm" and c.id.startswith("op-mamf-")]
    print("Modelled power at the measured GEMM ceiling (MAMF), nominal clocks")
    head = (
        f"{'chip':<15}{'prec':<6}{'TFLOP/s':>9}{'pJ/FLOP':>9}{'  datapath/operand/wire/shared/clock':<38}"
        f"{'matrix W':>9}{'DRAM W':>8}{'idle W':>8}{'total W':>9}{'TDP W':>7}{'ratio':>7}"
    )
    print(head)
    misses = 0
    for case in cases:
        chip, p = case.chip, case.precision
        flops = case.value * 1e12
        dram_bps = gemm_dram_bytes(case.params.m, case.params.n, case.params.k, p) / (
            2 * case.params.m * case.params.n * case.params.k / flops
        )
        e = flop_energy(chip, p)
        parts = "/".join(f"{x:.3f}" for x in (e.datapath, e.operands, e.operand_wires, e.shared, e.clock))
        total = power_watts(chip, p, flops, dram_bps)
        ratio = total / chip.tdp_w
        misses += abs(ratio - 1) > TOLERANCE
        print(
            f"{chip.id:<15}{p:<6}{case.value:>9.1f}{e.total:>9.3f}  {parts:<36}"
            f"{flops * e.total * 1e-12:>9.0f}{dram_bps * dram_pj_per_byte(chip) * 1e-12:>8.0f}"
            f"{idle_watts(chip):>8.0f}{total:>9.0f}{chip.tdp_w:>7.0f}{ratio:>7.2f}"
            f"{'' if abs(ratio - 1) <= TOLERANCE else '  MISS'}"
        )
    return misses


def clock_table() -> None:
    """Print the sustained clock of every catalog chip and design under a dense GEMM at peak."""
    print("\nSustained clock under a dense GEMM at peak (fraction of nominal), within TDP")
    print(f"{'chip':<16}{'node':<6}{'TDP W':>7}{'bf16':>7}{'fp8':>7}  note")
    for chip in all_chips():
        cells, note = [], ""
        for p in ("bf16", "fp8"):
            try:
                cells.append(f"{sustained_clock(chip, p):>7.2f}")
            except TapeoutError as exc:
                cells.append(f"{'-':>7}")
                note = str(exc).split(": ", 1)[1]
        target = CLOCK_TARGETS.get(chip.id)
        if target is not None:
            note = f"target bf16 >= {target}"
        print(f"{chip.id:<16}{chip.process_node or '-':<6}{chip.tdp_w:>7.0f}{''.join(cells)}  {note}")


def main() -> None:
    misses = mamf_table()
    print(f"\n{misses} case(s) outside {TOLERANCE:.0%} of TDP")
    clock_table()


if __name__ == "__main__":
    main()
