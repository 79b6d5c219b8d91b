"""tapeout: design AI chips, predict how they and GPUs run real workloads, and price the fleet."""

__version__ = "0.1.0"
