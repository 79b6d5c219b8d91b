"""The software stack: compile PyTorch models onto a chip, run them in its number formats, time them.

`compile(model, example_inputs, target=..., precision=...)` captures a model with `torch.export`
and our decomposition table (`capture`), lowers every node to the op vocabulary (`lower`), fuses,
tiles and plans memory for the chip (`passes`), and times each kernel with the cost rules
(`build`) into a `Program` (`program`). `backend` registers `torch.compile(backend="tapeout")`.
This package is the one place torch is imported; the core never imports it. A saved `Program`
reads without torch (`program`, `passes`), so a space can cost one on its designs.
"""

from __future__ import annotations

from typing import Any

from tapeout.compiler.program import SCHEMA, Program, Step

__all__ = ["SCHEMA", "CompiledModel", "Estimate", "Program", "Step", "compile"]
_NEEDS_TORCH = ("CompiledModel", "Estimate", "compile")


def __getattr__(name: str) -> Any:
    """The capture and compile API, imported (with torch) when first asked for."""
    if name in _NEEDS_TORCH:
        from tapeout.compiler import model

        return getattr(model, name)
    raise AttributeError(f"module 'tapeout.compiler' has no attribute {name!r}")
