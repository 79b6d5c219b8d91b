"""`tapeout.compile`: a PyTorch model to a callable compiled model for one chip.

>>> compiled = compile(model, (ids,), target="tapeout-i1", precision="bf16")  # doctest: +SKIP
>>> compiled(ids)          # runs every op in the chip's formats on the CPU   # doctest: +SKIP
>>> compiled.estimate()    # time, FLOPs and bytes from the cost rules         # doctest: +SKIP
>>> compiled.estimate(tp=8)  # one chip of 8 running it tensor-parallel          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)

from tapeout.compiler.build import build, get_target, numerics_for, system_of
from tapeout.compiler.capture import DynamicDims, export
from tapeout.compiler.program import Program
from tapeout.errors import TapeoutError
from tapeout.hardware.spec import ChipSpec
from tapeout.perf.rules import graph_cost


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """A program's time on its chip: the kernels' times summed in schedule order; `fallback_s` is
    the part spent in ops run on the host. Under tensor parallelism (`tp` > 1) the time, FLOPs and
    bytes are one chip's, the collectives included (`communication_s`); the memory figures stay
    the whole program's, and `unplaced` counts the ops computed whole on every chip."""

    target: str
    precision: str
    sizes: dict[str, int]
    time_s: float
    flops: float
    bytes: float
    fallback_s: float
    kernels: int
    fallbacks: int
    peak_activation_bytes: float
    weight_bytes: float
    tp: int = 1
    communication_s: float = 0.0
    unplaced: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def estimate_of(
    program: Program, *, tp: int = 1, sequence_parallel: bool = False, software: str | None = None,
    training: bool = False,
) -> Estimate:  # fmt: skip
    """The program's estimate on one chip; with `tp` > 1, on one of `tp` chips running it
    tensor-parallel: its sharded graph (`Program.sharded`) costed by the same rules on a system of
    `tp` chips under `software` (the collectives over their links)."""
    kernels = program.kernels()
    time_s, flops = sum(s.time_s for s in kernels), sum(s.flops for s in program.steps)
    moved, talk = sum(s.bytes for s in kernels), 0.0
    if tp != 1 or sequence_parallel:
        system, _ = system_of(get_target(program.target), software, training, chips=tp)
        one = program.sharded(tp, sequence_parallel=sequence_parallel)
        cost = graph_cost(one, system)
        time_s, moved = cost.time_s, cost.dram_bytes
        talk = graph_cost(one.communication(), system).time_s
        flops = program.sharded(tp, sequence_parallel=sequence_parallel, fused=True).compute().flops
    return Estimate(
        target=program.target, precision=program.precision, sizes=dict(program.sizes), time_s=time_s,
        flops=flops, bytes=moved, fallback_s=sum(s.time_s for s in kernels if s.fallback), kernels=len(kernels),
        fallbacks=len(program.fallbacks()), peak_activation_bytes=program.memory.peak_activation_bytes,
        weight_bytes=program.memory.weight_bytes, tp=tp, communication_s=talk, unplaced=len(program.unplaced()),
    )  # fmt: skip


def bucket(size: int) -> int:
    """The power of two a dynamic size is compiled for (sizes in one bucket share a program).

    >>> bucket(1), bucket(5), bucket(64)
    (1, 8, 64)
    """
    return 1 << max(0, size - 1).bit_length()


class CompiledModel:
    """A model captured once and compiled for a chip per bucket of its dynamic sizes."""

    def __init__(
        self, gm: torch.fx.GraphModule, example_inputs: tuple[Any, ...], chip: ChipSpec, precision: str,
        software: str | None, dynamic: DynamicDims | None,
    ) -> None:  # fmt: skip
        self.graph_module, self.example_inputs, self.chip = gm, example_inputs, chip
        self.precision, self.software, self.dynamic = precision, software, dict(dynamic or {})
        self._programs: dict[tuple[tuple[str, int], ...], Program] = {}
        self._scales: Any = None
        self._emulator: Any = None
        self._symbols = self._find_symbols()

    def _find_symbols(self) -> dict[str, Any]:
        placeholders = [n for n in self.graph_module.graph.nodes if n.op == "placeholder"]
        out: dict[str, Any] = {}
        for i, dims in self.dynamic.items():
            val = placeholders[i].meta.get("val") if i < len(placeholders) else None
            for d, name in dims.items():
                size = val.shape[d] if isinstance(val, torch.Tensor) else None
                if isinstance(size, torch.SymInt):
                    out[name] = size.node.expr
        return out

    def sizes_of(self, inputs: Sequence[Any]) -> dict[str, int]:
        """The bucket of each dynamic dimension for `inputs`."""
        out: dict[str, int] = {}
        for i, dims in self.dynamic.items():
            for d, name in dims.items():
                out[name] = max(out.get(name, 1), bucket(int(inputs[i].shape[d])))
        return out

    def program(self, inputs: Sequence[Any] | None = None) -> Program:
        """The program for the bucket of `inputs` (default: the example inputs)."""
        named = self.sizes_of(inputs if inputs is not None else self.example_inputs)
        key = tuple(sorted(named.items()))
        if key not in self._programs:
            sizes = {self._symbols[n]: v for n, v in named.items() if n in self._symbols}
            self._programs[key] = build(self.graph_module, self.chip, precision=self.precision,
                                        software=self.software, sizes=sizes, named_sizes=named)  # fmt: skip
        return self._programs[key]

    def estimate(
        self, inputs: Sequence[Any] | None = None, *, tp: int = 1, sequence_parallel: bool = False
    ) -> Estimate:
        """Time, FLOPs and bytes of the program for `inputs`' bucket; with `tp`, one chip's of
        `tp` running it tensor-parallel (`sequence_parallel`: the stream split by tokens)."""
        return estimate_of(self.program(inputs), tp=tp, sequence_parallel=sequence_parallel,
                           software=self.software)  # fmt: skip

    def report(self, inputs: Sequence[Any] | None = None) -> str:
        return report(self.program(inputs))

    def __call__(self, *inputs: Any) -> Any:
        """Run the model with every op in the chip's formats (numerics emulation on the CPU). One
        emulator serves every call, so the weights are quantised once."""
        if self._emulator is None:
            numerics, policy = self._numerics()
            if self._scales is None and self.precision in ("fp8", "int8"):
                self._scales = numerics.calibrate(self.graph_module, self.example_inputs, policy)
            self._emulator = numerics.Emulator(self.graph_module, policy, self._scales)
        with torch.no_grad():
            return self._emulator.run(*inputs)

    def numerics(self, inputs: Sequence[Any] | None = None) -> Any:
        """Per-op error of the emulated run against fp32, and the first op over the tolerance."""
        numerics, policy = self._numerics()
        if self._scales is None and self.precision in ("fp8", "int8"):
            self._scales = numerics.calibrate(self.graph_module, self.example_inputs, policy)
        args = tuple(inputs) if inputs is not None else self.example_inputs
        return numerics.bisect(self.graph_module, args, policy, self._scales)

    def _numerics(self) -> tuple[Any, Any]:
        try:
            import tapeout.compiler.numerics as numerics
        except ImportError as exc:
            raise TapeoutError(
                f"numerics emulation is not available in this installation ({exc}); estimate() and "
                "report() work without it"
            ) from exc
        return numerics, numerics.FormatPolicy.of(self.precision)


def report(program: Program) -> str:
    """A program's compile report: the target, the per-op table, the fallbacks and the memory plan."""
    est = estimate_of(program)
    m = program.memory
    sizes = ", ".join(f"{k}={v}" for k, v in program.sizes.items()) or "static shapes"
    lines = [
        f"{program.target}, {program.precision}, {program.phase}, {sizes}; software {program.software}",
        program.table(),
        f"kernels: {est.kernels}; time {est.time_s * 1e6:,.1f} us; {est.flops / 1e9:,.3f} GFLOP; "
        f"{est.bytes / 1e6:,.2f} MB moved",
        f"memory: weights {m.weight_bytes / 1e6:,.2f} MB in {m.weights_in}; activation peak "
        f"{m.peak_activation_bytes / 1e6:,.2f} MB; inputs {m.input_bytes / 1e6:,.3f} MB",
    ]
    whole = program.unplaced()
    if whole:
        lines.append(f"whole on every chip under tensor parallelism ({len(whole)}):")
        lines += [f"  {s.name} {s.target}: {s.unplaced}" for s in whole]
    falls = program.fallbacks()
    if falls:
        lines.append(f"fallbacks ({len(falls)}, run on the host, {est.fallback_s * 1e6:,.1f} us):")
        lines += [f"  {s.name} {s.target} {s.shape} {s.source}" for s in falls]
    else:
        lines.append("fallbacks: none")
    return "\n".join(lines)


def compile(
    model: torch.nn.Module, example_inputs: Sequence[Any], target: str | ChipSpec = "tapeout-i1",
    precision: str = "bf16", dynamic: Mapping[int, Mapping[int, str]] | None = None, software: str | None = None,
) -> CompiledModel:  # fmt: skip
    """Capture `model` on `example_inputs` (torch.export, our decomposition table) and compile it for
    `target` in `precision`. `dynamic` names dynamic dimensions (`{0: {0: "batch", 1: "seq"}}`);
    the program is specialised per power-of-two bucket of them."""
    chip = get_target(target)
    numerics_for(chip, precision, training=False)  # refuse a format the chip lacks before capturing
    if isinstance(example_inputs, torch.Tensor) or not isinstance(example_inputs, Sequence):
        raise TapeoutError("field 'example_inputs': expected a tuple of inputs, e.g. (ids,)")
    args = tuple(example_inputs)
    gm = export(model, args, dynamic)
    compiled = CompiledModel(gm, args, chip, precision, software, dynamic)
    compiled.program()  # compile the examples' bucket now: errors surface at compile time
    return compiled
