"""Energy per FLOP from sourced physical figures (perf/energy.py, perf/energy.yaml)."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError
from tapeout.hardware import get_chip
from tapeout.hardware.spec import MemoryType
from tapeout.perf.energy import (
    ENERGY_FILE,
    dram_pj_per_byte,
    energy_table,
    flop_energy,
    flop_pj,
    full_load_watts,
    gemm_dram_bytes,
    load_energy,
    node_of,
    power_watts,
    sustained_clock,
)
from tapeout.precision import PRECISIONS
from tapeout.validate import PUBLIC_CASES, load_cases

NODES_NEWEST_LAST = ("N16", "N12", "N7", "N6", "N5", "N4", "N4P", "N3")


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "energy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_file_parses_and_covers_every_node_memory_and_format() -> None:
    e = energy_table()
    assert set(e.node_scale) >= set(NODES_NEWEST_LAST)
    assert set(e.dram_pj_per_bit) == set(get_args(MemoryType))
    assert set(e.mac_pj) == set(PRECISIONS)
    assert e.mac_pj["bf16"] == pytest.approx(1.1 + 0.9)  # Horowitz fp16 multiply + fp32 add


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d["wire"].update(value=-1), ["wire.value", "-1", "pJ/bit/mm"]),
        (lambda d: d["sram"]["local"].update(unit="pJ/bit"), ["sram.local.unit", "pJ/bit", "pJ/B"]),
        (lambda d: d["dram_pj_per_bit"]["HBM3"].pop("source"), ["dram_pj_per_bit.HBM3.source", "pJ/bit"]),
        (lambda d: d["clock_share"].update(value=1.5), ["clock_share.value", "1.5", "fraction"]),
        (lambda d: d["node_energy"]["N5"].update(relative_to="N9"), ["node_energy.N5.relative_to", "N9"]),
        (lambda d: d["macs"].update(fp8=["fp8_multiply"]), ["macs.fp8", "fp8_multiply"]),
        (lambda d: d["dram_pj_per_bit"].pop("GDDR7"), ["dram_pj_per_bit", "GDDR7"]),
        (
            lambda d: d["accumulator_store"]["hopper"].update(store="cache"),
            ["accumulator_store.hopper.store", "cache"],
        ),
        (
            lambda d: d["accumulator_store"]["ampere"].update(unit="KB"),
            ["accumulator_store.ampere.unit", "KiB"],
        ),
        (lambda d: d["sram_capacity_exponent"].update(value=1.5), ["sram_capacity_exponent.value", "1.5"]),
    ],
)
def test_bad_entry_is_refused_naming_field_value_and_unit(
    tmp_path: Path, edit: Any, words: list[str]
) -> None:
    data = load_data_file(ENERGY_FILE)
    edit(data)
    with pytest.raises(TapeoutError) as err:
        load_energy(_write(tmp_path, data))
    for word in words:
        assert word in str(err.value)


def test_node_scaling_is_monotone_and_follows_tsmc_steps() -> None:
    scale = [energy_table().node_scale[n] for n in NODES_NEWEST_LAST]
    assert all(a >= b for a, b in pairwise(scale))
    assert scale[0] > scale[-1]
    s = energy_table().node_scale
    assert s["N5"] == pytest.approx(0.70 * s["N7"])  # TSMC: N5 -30 % power at iso-speed
    assert s["N4P"] == pytest.approx(0.78 * s["N5"])  # TSMC: N4P -22 %


@pytest.mark.parametrize("chip_id", ["h100-sxm", "b200", "mi300x", "tapeout-i1"])
def test_fp8_is_cheaper_than_bf16_per_flop(chip_id: str) -> None:
    chip = get_chip(chip_id)
    assert flop_pj(chip, "fp8") < flop_pj(chip, "bf16")


def test_a_format_the_chip_lacks_costs_what_it_runs_as() -> None:
    a100 = get_chip("a100-sxm-80gb")  # no fp8 units: fp8 runs as bf16
    assert flop_pj(a100, "fp8") == flop_pj(a100, "bf16")


def test_datapath_dram_and_full_load_follow_their_formulas() -> None:
    a100 = get_chip("a100-sxm-80gb")
    assert flop_energy(a100, "bf16").datapath == pytest.approx(2.0 / 2 * energy_table().node_scale["N7"])
    h100 = get_chip("h100-sxm")
    assert dram_pj_per_byte(h100) == pytest.approx(8 * 3.9)  # HBM3
    matrix_w, dram_w = full_load_watts(h100)
    assert matrix_w == pytest.approx(h100.peak_flops("bf16") * flop_pj(h100, "bf16") * 1e-12)
    assert dram_w == pytest.approx(h100.memory_bandwidth * 8 * 3.9 * 1e-12)
    assert gemm_dram_bytes(16, 32, 64, "fp8") == 16 * 64 + 64 * 32 + 16 * 32 * 2


def test_unpublished_nodes_and_matrix_units_take_their_stated_stand_ins() -> None:
    """A chip launched from 2023 with no published node is costed as N5, earlier ones as N7; one
    that lists no matrix unit as a 16 x 16 dot-product unit."""
    v5e, v4 = get_chip("tpu-v5e"), get_chip("tpu-v4")
    assert v5e.process_node is None and node_of(v5e) == "N5" and node_of(v4) == v4.process_node
    mtia = get_chip("mtia-v1")
    assert mtia.matrix_unit is None and 0 < flop_pj(mtia, "bf16") < 2
    assert flop_pj(v5e, "fp32") == flop_pj(v5e, "bf16")  # no fp32 matrix peak: charged as its widest


def test_accumulators_are_charged_at_the_store_that_holds_them() -> None:
    """A register file of twice the 32 KB reference costs sqrt(2) x per byte and crosses the core;
    Blackwell's tensor memory serves only the Tensor Core and crosses no core wire."""
    e = energy_table()
    h100, b200 = get_chip("h100-sxm"), get_chip("b200")
    assert e.accumulator_store["hopper"].store == "register_file"
    assert e.accumulator_store["blackwell"].store == "tensor_memory"
    acc = 8 / (2 * 16)  # bf16: fp32 accumulator read and written once per 32 operand bytes
    unit = b200.matrix_unit
    assert unit is not None and h100.matrix_unit is not None
    die = b200.die_area_mm2 or e.reticle_mm2
    core_mm = math.sqrt(die * b200.dies_per_package / b200.num_cores) / 2
    ops = 2 / 2 * (1 / unit.rows + 1 / unit.cols)  # bf16 operand bytes per FLOP
    assert flop_energy(b200, "bf16").operand_wires == pytest.approx(ops * e.wire_pj_per_byte_mm * core_mm)
    ops_h = 2 / 2 * (1 / h100.matrix_unit.rows + 1 / h100.matrix_unit.cols)
    expected = (ops_h * 2.5 + acc * 2.5 * math.sqrt(64 / 32)) * e.node_scale["N4"]
    assert flop_energy(h100, "bf16").operands == pytest.approx(expected)


@pytest.mark.parametrize(("chip_id", "floor"), [("h100-sxm", 0.75), ("a100-sxm-80gb", 0.8)])
def test_tdp_sustains_most_of_the_clock_under_a_dense_gemm(chip_id: str, floor: float) -> None:
    """Real H100 SXM and A100 hold about 80-87 % of their dense-GEMM peak within TDP."""
    assert sustained_clock(get_chip(chip_id), "bf16") >= floor


# Cases where the sourced figures leave the modelled power more than 20 % from TDP (the report of
# benchmarks/power_physics.py gives the breakdown): A100 sits just below 0.8 x TDP, Gaudi 3's
# 256 x 256 arrays need almost no operand delivery and model at 0.66 x TDP.
SHORT_OF_TDP = {"op-mamf-bf16-a100sxm", "op-mamf-bf16-gaudi3"}
MAMF = [c for c in load_cases(PUBLIC_CASES) if c.kind == "gemm" and c.id.startswith("op-mamf-")]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=c.id, marks=pytest.mark.xfail(reason="sourced figures model < 0.8 x TDP", strict=True)
        )
        if c.id in SHORT_OF_TDP
        else pytest.param(c, id=c.id)
        for c in MAMF
    ],
)
def test_power_at_the_gemm_ceiling_is_within_20_percent_of_tdp(case: Any) -> None:
    """MAMF cases run power-capped at TDP; the model's power at their throughput should match."""
    m, n, k = case.params.m, case.params.n, case.params.k
    flops = case.value * 1e12
    dram_bps = gemm_dram_bytes(m, n, k, case.precision) * flops / (2 * m * n * k)
    ratio = power_watts(case.chip, case.precision, flops, dram_bps) / case.chip.tdp_w
    assert abs(ratio - 1) <= 0.20, f"{case.id}: {ratio:.2f} x TDP"
