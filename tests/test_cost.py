import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from tapeout.cli import app
from tapeout.cost.api import cost, load_chip
from tapeout.cost.area import die_area, fit, held_out, published_dies
from tapeout.cost.silicon import silicon
from tapeout.cost.tco import TcoAssumptions, chip_tco, usd_per_unit
from tapeout.cost.unit import check_design, die_yield, dies_per_wafer, unit_cost
from tapeout.errors import TapeoutError
from tapeout.hardware import all_chips, get_chip
from tapeout.hardware.catalog import DESIGNS_DIR


@pytest.mark.parametrize(
    ("area", "dpw", "nb"), [(100, 640, 0.906), (400, 143, 0.687), (814, 63.5, 0.487), (858, 59.6, 0.470)]
)
def test_wafer_and_yield_match_the_worked_table(area, dpw, nb):
    """research/hardware_cost.md 2.4: dies per wafer and NB(alpha=3) yield at D0 = 0.10."""
    assert dies_per_wafer(area) == pytest.approx(dpw, abs=0.6)
    assert die_yield(area, 0.10, 3.0) == pytest.approx(nb, abs=0.001)


def test_the_fitted_area_constants_are_what_the_published_dies_give():
    dies = published_dies(all_chips())
    core, feed = fit(dies)
    assert silicon().area.core_mm2_n7 == pytest.approx(core, rel=1e-3)
    assert silicon().area.array_feed_mm2_n7 == pytest.approx(feed, rel=1e-3)


def test_modelled_die_areas_are_within_15_percent():
    """Target: within 15 % of the published area for every distinct die. Measured: all 6 within
    12 %; held out (refit without the die), within 25 %: TPU v4 +24 % and Gaudi 2 -17 %, the two
    dies the array feed is fitted on. This holds both levels against regressions."""
    dies = published_dies(all_chips())
    assert len(dies) == 6
    errors = {c.id: die_area(c).total / c.die_area_mm2 - 1 for c in dies}
    loo = held_out(dies)
    table = "\n".join(f"{k}: {100 * v:+.1f} % (held out {100 * loo[k]:+.1f} %)" for k, v in errors.items())
    assert max(abs(e) for e in errors.values()) <= 0.12, table
    assert max(abs(e) for e in loo.values()) <= 0.25, table
    assert sum(abs(e) for e in loo.values()) / len(loo) >= sum(abs(e) for e in errors.values()) / len(errors)


def test_area_blocks_follow_their_formulas():
    """Gaudi 2 (N7): 2 array-style MMEs and 24 vector-only TPCs of 64 FP32 lanes."""
    chip, a = get_chip("gaudi2"), silicon().area
    area = die_area(chip)
    macs = 2 * 256 * 256
    assert area.matrix_units == pytest.approx(macs * (a.mac_mm2_n7 + a.array_feed_mm2_n7))
    assert area.cores == pytest.approx((2 + 24) * a.core_mm2_n7)
    assert area.vector_lanes == pytest.approx(
        24 * 64 * a.fp32_lane_mtr / silicon().nodes["N7"].logic_mtr_per_mm2
    )
    assert area.other == pytest.approx((area.total - area.other) * a.other_fraction / (1 - a.other_fraction))


def test_a_dot_product_unit_has_no_array_feed():
    chip = get_chip("tpu-v4")
    dot = chip.model_copy(
        update={"matrix_unit": chip.matrix_unit.model_copy(update={"style": "dot_product"})}
    )
    macs = chip.matrix_unit.macs * chip.num_cores
    saved = die_area(chip).matrix_units - die_area(dot).matrix_units
    assert saved == pytest.approx(macs * silicon().area.array_feed_mm2_n7)


def test_a_cut_down_part_is_priced_on_its_whole_die():
    assert die_area(get_chip("h20")).total == pytest.approx(die_area(get_chip("h100-sxm")).total)


def test_unit_cost_adds_up_and_nre_spreads_over_volume():
    chip = get_chip("tapeout-i1")
    a, b = unit_cost(chip, volume=100_000), unit_cost(chip, volume=200_000)
    parts = a.die_usd + a.memory_usd + a.package_usd + a.test_usd + a.board_usd
    assert a.manufacturing_usd == pytest.approx(parts)
    assert a.total_usd - a.manufacturing_usd == pytest.approx(2 * (b.total_usd - b.manufacturing_usd))
    s = silicon()
    node = s.nodes["N5"]
    assert a.nre_usd == node.masks_usd + node.ip_usd + node.design_usd
    assert a.memory_usd == pytest.approx(96 * s.memory_usd_per_gb["HBM3"])
    dpw = dies_per_wafer(a.area.total)
    assert a.die_usd == pytest.approx(node.wafer_usd / (dpw * die_yield(a.area.total, node.defects_per_cm2)))
    with pytest.raises(TapeoutError, match="volume"):
        unit_cost(chip, volume=0)


@pytest.mark.parametrize("design", ["tapeout-i1", "tapeout-t1"])
def test_our_designs_are_derived_and_pass_their_checks(design):
    chip = get_chip(design)
    check_design(chip)
    assert chip.peak_flops("bf16") == pytest.approx(
        2 * chip.matrix_unit.macs * chip.num_cores * chip.clock_ghz * 1e9
    )
    assert chip.die_area_mm2 is None and chip.vendor == "tapeout"
    assert die_area(chip).total < silicon().reticle_mm2
    assert chip.process_node == "N5"


def _design(tmp_path, **changes):
    data = yaml.safe_load((DESIGNS_DIR / "tapeout-i1.yaml").read_text())
    data.update(changes)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_chip(str(path))


def test_a_design_over_the_reticle_says_so_with_the_numbers(tmp_path):
    with pytest.raises(TapeoutError, match=r"mm\^2, over the 858 mm\^2 reticle limit"):
        check_design(_design(tmp_path, num_cores=200))


def test_a_design_with_too_many_hbm_stacks_says_so(tmp_path):
    memory = {"type": "HBM3", "interfaces": 12, "gb_per_interface": 16}
    with pytest.raises(TapeoutError, match=r"12 HBM stacks need .* at most \d+ stacks"):
        check_design(_design(tmp_path, memory=memory))


def test_a_design_over_its_power_budget_says_so(tmp_path):
    with pytest.raises(TapeoutError, match=r"over its power budget: full load draws .* against 150 W"):
        check_design(_design(tmp_path, power_budget_w=150))


def test_a_design_names_a_bad_field(tmp_path):
    with pytest.raises(TapeoutError, match=r"gb_per_interface.*10 GB is not a HBM3 stack"):
        _design(tmp_path, memory={"type": "HBM3", "interfaces": 6, "gb_per_interface": 10})
    with pytest.raises(TapeoutError, match="clock_ghz"):
        _design(tmp_path, clock_ghz=-1)


def test_cost_command_json_has_the_contract_keys():
    out = json.loads(CliRunner().invoke(app, ["cost", "h100-sxm", "--json"]).stdout)
    assert out["published_die_area_mm2"] == 814
    assert out["die_area_mm2"] > 0 and out["unit_cost_usd"] > 0
    ours = cost("tapeout-t1", volume=50_000)
    assert ours["published_die_area_mm2"] is None and ours["volume"] == 50_000


def test_cost_without_a_node_is_a_clear_error():
    with pytest.raises(TapeoutError, match="process_node"):
        cost("inferentia2")


def test_tco_parts_follow_their_formulas():
    a = TcoAssumptions()
    t = chip_tco(20_000, 500, a)
    assert t.network_usd / (t.chip_usd + t.server_usd + t.network_usd) == pytest.approx(a.network_fraction)
    wall_kw = 500 * a.server_power_factor * a.average_power_fraction * a.pue / 1000
    assert t.energy_usd == pytest.approx(wall_kw * a.years * 8766 * a.usd_per_kwh)
    assert usd_per_unit(t, 2000.0) == pytest.approx(usd_per_unit(t, 1000.0) / 2)
    assert math.isclose(t.total_usd, t.capital_usd + t.energy_usd)
    with pytest.raises(TapeoutError, match="pue"):
        TcoAssumptions(pue=0.9)
    with pytest.raises(TapeoutError, match="price_usd"):
        chip_tco(0, 500)


def test_a_bought_chip_shows_its_markets_price_and_the_levy_on_top():
    out = cost("h200-sxm", region="CN", levy=0.25)
    assert out["market_price"]["region"] == "CN" and out["market_price"]["date"] == "2025-12"
    assert out["price_with_levy_usd"] == pytest.approx(out["market_price"]["usd"] * 1.25)
    with pytest.raises(TapeoutError, match=r"no catalog price in region 'US' \(regions with a price: CN\)"):
        cost("h200-sxm", region="US")
    with pytest.raises(TapeoutError, match="field 'levy'"):
        cost("h200-sxm", levy=-0.1)
