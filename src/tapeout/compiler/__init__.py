"""The software stack: compile PyTorch models onto a chip, run them in its number formats, time them.

`compile(model, example_inputs, target=..., precision=...)` captures a model with `torch.export`
and our decomposition table (`capture`), lowers every node to the op vocabulary (`lower`), fuses,
tiles and plans memory for the chip (`passes`), and times each kernel with the cost rules
(`build`) into a `Program` (`program`). `backend` registers `torch.compile(backend="tapeout")`.
This package is the one place torch is imported; the core never imports it.
"""

from tapeout.compiler.model import CompiledModel, Estimate, compile
from tapeout.compiler.program import SCHEMA, Program, Step

__all__ = ["SCHEMA", "CompiledModel", "Estimate", "Program", "Step", "compile"]
