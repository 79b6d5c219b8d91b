"""Silicon cost: die area, yield, unit cost, power and TCO."""
