"""Frozen hardware specs and the catalog of chips."""

from tapeout.hardware.catalog import all_chips, chip_ids, get_chip, resolve_chip
from tapeout.hardware.spec import ChipSpec

__all__ = ["ChipSpec", "all_chips", "chip_ids", "get_chip", "resolve_chip"]
