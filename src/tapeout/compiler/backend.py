"""`torch.compile(model, backend="tapeout")`: an `aot_autograd` backend, registered through the
`torch_dynamo_backends` entry point. Dynamo's graph is traced by AOT autograd into a forward and,
when gradients are needed, a backward graph, both decomposed with the compiler's table; each is
lowered and compiled for the target into a `Program` (kept in `programs()`), and runs as the
captured ATen graph, so training works unchanged.

>>> compiled = torch.compile(model, backend="tapeout", options={"target": "tapeout-t1"})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)
from functorch.compile import make_boxed_func  # type: ignore[import-untyped]
from torch._dynamo.backends.common import aot_autograd  # noqa: TID251

from tapeout.compiler.build import build, get_target
from tapeout.compiler.capture import decomposition_table
from tapeout.compiler.program import Program

_PROGRAMS: list[Program] = []
DEFAULTS = {"target": "tapeout-t1", "precision": "bf16", "software": None, "emulate": True}


def programs() -> list[Program]:
    """The programs compiled by the backend in this process, in the order they were compiled."""
    return list(_PROGRAMS)


def clear() -> None:
    _PROGRAMS.clear()


def tapeout_backend(
    gm: torch.fx.GraphModule, example_inputs: list[Any], options: Mapping[str, Any] | None = None
) -> Callable[..., Any]:
    """The backend: `options` may give `target`, `precision`, `software` and `emulate` (True: the
    graphs run in the target's formats, `compiler.numerics`; False: as captured, in fp32)."""
    unknown = set(options or {}) - set(DEFAULTS)
    if unknown:
        from tapeout.errors import TapeoutError

        raise TapeoutError(
            f"field 'options': unknown {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **(options or {})}
    chip = get_target(str(opts["target"]))
    # Dynamo passes the module's parameters as graph inputs, and AOT autograd's forward takes
    # them first in the same order: those inputs are the weights of the forward program.
    params = frozenset(i for i, x in enumerate(example_inputs) if isinstance(x, torch.nn.Parameter))

    def compiler(phase: str) -> Callable[[torch.fx.GraphModule, list[Any]], Callable[..., Any]]:
        def run(graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
            _PROGRAMS.append(build(graph, chip, precision=str(opts["precision"]), software=opts["software"],
                                   phase=phase, training=True,
                                   weight_inputs=params if phase == "forward" else frozenset()))  # fmt: skip
            boxed: Callable[..., Any] = make_boxed_func(
                _runner(graph, str(opts["precision"]), bool(opts["emulate"]))
            )
            return boxed

        return run

    backend = aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward"),
                           decompositions=decomposition_table())  # fmt: skip
    compiled: Callable[..., Any] = backend(gm, example_inputs)
    return compiled


def _runner(graph: torch.fx.GraphModule, precision: str, emulate: bool) -> Callable[..., Any]:
    """How a captured forward or backward graph runs: in the target's formats (one emulator per
    graph, so weights are converted once) or as captured."""
    if not emulate:
        return graph.forward
    from tapeout.compiler.numerics import Emulator, FormatPolicy

    emulator = Emulator(graph, FormatPolicy.of(precision))

    def run(*args: Any) -> Any:
        with torch.no_grad():
            return emulator.run(*args)

    return run
