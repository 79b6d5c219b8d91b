"""The silicon cost data (`silicon.yaml`) as one frozen, typed value."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

import pydantic
from pydantic import Field

from tapeout._yaml import load_data_file
from tapeout.errors import TapeoutError, from_validation
from tapeout.frozen import Frozen

DATA_FILE = Path(__file__).parent / "silicon.yaml"
Pos = Annotated[float, Field(gt=0)]


class NodeCost(Frozen):
    logic_mtr_per_mm2: Pos
    sram_scale: Pos
    wafer_usd: Pos
    defects_per_cm2: Pos
    masks_usd: Pos
    ip_usd: Pos
    design_usd: Pos
    serdes_mm2_per_gb_s: Pos
    pcie_lane_mm2: Pos


class AreaConstants(Frozen):
    scratchpad_mib_per_mm2_n7: Pos
    cache_mib_per_mm2_n7: Pos
    hbm_phy_mm2: Pos
    hbm_controller_mtr: Pos
    dram_phy_mm2: Pos
    dram_controller_mtr: Pos
    serdes_controller_mtr_per_gb_s: Pos
    pcie_lanes: int
    pcie_controller_mtr_per_lane: Pos
    noc_mtr_per_core: Pos
    other_fraction: Annotated[float, Field(ge=0, lt=1)]
    mac_mm2_n7: Pos
    fp32_lane_mtr: Pos
    array_feed_mm2_n7: Annotated[float, Field(ge=0)]
    core_mm2_n7: Annotated[float, Field(ge=0)]


class Silicon(Frozen):
    nodes: dict[str, NodeCost]
    area: AreaConstants
    reticle_mm2: Pos
    hbm_site_edge_mm: Pos
    yield_alpha: Pos
    wafer_diameter_mm: Pos
    memory_usd_per_gb: dict[str, Pos]
    cowos_usd_per_mm2: Pos
    hbm_footprint_mm2: Pos
    organic_package_usd: Pos
    test_fraction: Annotated[float, Field(ge=0)]
    board_usd: Annotated[float, Field(ge=0)]

    def node(self, name: str | None, chip_id: str) -> NodeCost:
        if name is None:
            raise TapeoutError(f"{chip_id}: field 'process_node' is unknown, and the cost model needs it")
        if name not in self.nodes:
            raise TapeoutError(
                f"{chip_id}: field 'process_node': no cost data for {name!r}; known: {', '.join(self.nodes)}"
            )
        return self.nodes[name]


@cache
def silicon() -> Silicon:
    """The bundled silicon cost data.

    >>> silicon().nodes["N5"].wafer_usd
    16988.0
    """
    try:
        return Silicon.model_validate(load_data_file(DATA_FILE))
    except pydantic.ValidationError as exc:
        raise from_validation(exc, str(DATA_FILE), None) from None
