"""tapeout: design AI chips, predict how they and GPUs run real workloads, and price the fleet."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`tapeout.compile`, loaded on first use (PEP 562): the core never imports torch, and importing
    `tapeout` imports nothing."""
    if name == "compile":
        from tapeout.compiler import compile as compile_model

        return compile_model
    raise AttributeError(f"module 'tapeout' has no attribute {name!r}")
