import copy

import pytest

from tapeout.errors import TapeoutError, UnknownIdError
from tapeout.hardware import all_chips, chip_ids, get_chip, resolve_chip
from tapeout.hardware.catalog import _raw_catalog, chip_from_mapping

REQUIRED = [
    "a100-sxm-40gb",
    "a100-sxm-80gb",
    "a100-pcie-80gb",
    "h100-sxm",
    "h100-pcie",
    "h100-nvl",
    "h800-sxm",
    "h20",
    "h200-sxm",
    "h200-nvl",
    "gh200",
    "b200",
    "gb200",
    "mi300x",
    "mi325x",
    "gaudi2",
    "gaudi3",
    "tpu-v4",
    "tpu-v5e",
    "tpu-v5p",
    "tpu-v6e",
    "mtia-v1",
    "mtia-v2",
    "trainium2",
    "inferentia2",
    "ascend-910b",
]


def test_catalog_has_every_required_chip():
    assert set(REQUIRED) <= set(chip_ids())


@pytest.mark.parametrize("chip_id", REQUIRED)
def test_every_chip_loads_with_sources_and_a_default_node(chip_id):
    chip = get_chip(chip_id)
    assert chip.id == chip_id
    assert chip.peak_flops("bf16") > 0
    assert chip.memory_bandwidth > 0
    assert chip.node.chips_per_node >= 1
    assert "peak_tflops" in chip.sources
    assert "memory" in chip.sources


def test_every_chip_has_a_dated_price_or_says_why():
    for chip in all_chips():
        assert chip.price or any("price" in n.lower() for n in chip.notes), chip.id


def test_unknown_id_lists_known_ones():
    with pytest.raises(UnknownIdError, match=r"known: .*h100-sxm"):
        get_chip("h1000")


def _raw(chip_id="h100-sxm"):
    return copy.deepcopy(_raw_catalog()[chip_id])


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("memory", "bandwidth_gb_s"), -1, r"memory.bandwidth_gb_s.*unit: GB/s"),
        (("num_cores",), 0, r"num_cores"),
        (("tdp_w",), "700W", r"tdp_w.*unit: W"),
        (("scale_up", "bandwidth_per_direction_gb_s"), -450, r"scale_up.bandwidth_per_direction_gb_s"),
    ],
)
def test_bad_fields_are_rejected_naming_the_field(path, value, message):
    data = _raw()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(TapeoutError, match=message):
        chip_from_mapping(data, "x.yaml", "h100-sxm")


def test_unknown_and_missing_fields_are_rejected():
    data = _raw()
    data["hbm_bandwith"] = 3
    with pytest.raises(TapeoutError, match=r"hbm_bandwith.*unknown field"):
        chip_from_mapping(data, "x.yaml", "h100-sxm")
    data = _raw()
    del data["tdp_w"]
    with pytest.raises(TapeoutError, match="'tdp_w': missing"):
        chip_from_mapping(data, "x.yaml", "h100-sxm")


def test_a_matrix_unit_larger_than_the_die_is_rejected():
    data = _raw()
    data["matrix_unit"] = {"rows": 1024, "cols": 1024, "per_core": 16}
    with pytest.raises(TapeoutError, match=r"matrix_unit.*mm\^2"):
        chip_from_mapping(data, "x.yaml", "h100-sxm")


def test_a_number_without_a_source_is_rejected():
    data = _raw()
    del data["sources"]["tdp_w"]
    with pytest.raises(TapeoutError, match="sources has no entry for tdp_w"):
        chip_from_mapping(data, "x.yaml", "h100-sxm")


def test_inline_override_starts_from_the_catalog():
    chip = resolve_chip({"base": "a100-sxm-80gb", "tdp_w": 330, "memory": {"bandwidth_gb_s": 1000}})
    base = get_chip("a100-sxm-80gb")
    assert chip.tdp_w == 330
    assert chip.memory.bandwidth_gb_s == 1000
    assert chip.memory.capacity_gb == base.memory.capacity_gb
    assert base.tdp_w != 330  # the catalog entry is untouched


def test_fp8_on_a_chip_without_it_runs_at_16_bit():
    a100 = get_chip("a100-sxm-80gb")
    assert a100.peak_flops("fp8") == a100.peak_flops("bf16")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cores": 100}, r"die.cores: 100 is fewer than the 132 enabled cores"),
        ({"core_sram_kib": 200}, r"die.core_sram_kib: 200 KiB is less than the 228 KiB per core"),
        ({"fp32_lanes_per_core": -1}, r"die.fp32_lanes_per_core"),
        ({"vector_cores": {"count": 0, "fp32_lanes_per_core": 64}}, r"die.vector_cores.count"),
    ],
)
def test_a_die_smaller_than_its_product_is_rejected(change, message):
    data = _raw()
    data["die"].update(change)
    with pytest.raises(TapeoutError, match=message):
        chip_from_mapping(data, "x.yaml", "h100-sxm")
