"""Numerics emulation: run a captured graph on the CPU in a chip's number formats.

The graph is the `torch.fx.GraphModule` of an exported, decomposed program (parameters and
buffers are its attributes, the user inputs its placeholders). The emulator walks it node by
node under a `FormatPolicy`:

- matrix products (`mm`, `addmm`, `bmm`, `baddbmm`, `matmul`, `linear` and the
  scaled-dot-product attention ops) read their operands in the policy's format: weights with a
  scale per output channel by default, activations with one per tensor, both from amax values
  calibrated on example inputs (`calibrate`) or observed on the inputs themselves; they multiply
  with fp32 accumulation and store their result in the storage format;
- every other op reads storage-format values, computes in fp32, as real kernels do for
  elementwise maps, norms, softmax and reductions (PyTorch's bf16 kernels upcast to fp32 inside;
  fused norm and softmax kernels keep fp32 statistics), and stores its result in the storage
  format; layout ops (views, permutes, slices, gathers, concatenations) move stored values as
  they are;
- the storage format is bf16 for the bf16, fp8 and int8 policies (an 8-bit matmul writes 16-bit
  results, `tapeout.precision.at_least_16`) and fp32 for the fp32 policy, which is the plain
  graph. Embedding tables and norm weights stay in the storage format.

`bisect` runs the fp32 graph beside the emulated one and reports every op's error, both on the
exact inputs (the error the op itself makes) and along the emulated run (the error carried to
it), and the first op past a tolerance.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)
import torch.fx as fx  # noqa: TID251
from torch.utils.weak import WeakIdKeyDictionary  # noqa: TID251

from tapeout.compiler.formats import (
    FORMATS,
    GRANULARITIES,
    Format,
    Granularity,
    amax,
    amax_shape,
    fake_quantize,
    round_to,
    scale_of,
)
from tapeout.compiler.operands import (
    DROP,
    EXPLICIT,
    LAYOUT,
    OPERANDS,
    SAME_VALUES,
    SELECTS,
    UNINITIALISED,
    op_name,
    relative_error,
    tensors,
)
from tapeout.errors import TapeoutError
from tapeout.precision import Precision, at_least_16, parse

POLICY_PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp8", "int8")
FP8_FORMATS = ("e4m3", "e5m2")


@dataclass(frozen=True, slots=True, kw_only=True)
class FormatPolicy:
    """The formats an emulated run uses: `precision` of the matrix products' operands, the fp8
    flavour, how weights and activations are scaled, and the block length along the reduction
    axis for block scaling.

    >>> FormatPolicy.of("fp8").operand_format.name, FormatPolicy.of("fp8").storage_format.name
    ('e4m3', 'bf16')
    """

    precision: str
    fp8_format: str = "e4m3"
    weight_scaling: str = "per_channel"
    activation_scaling: str = "per_tensor"
    block: int = 128

    def __post_init__(self) -> None:
        parse(self.precision, "precision", POLICY_PRECISIONS)
        if self.fp8_format not in FP8_FORMATS:
            raise TapeoutError(
                f"field 'fp8_format': unknown fp8 format {self.fp8_format!r}; known: e4m3, e5m2"
            )
        for name in ("weight_scaling", "activation_scaling"):
            value = getattr(self, name)
            if value not in GRANULARITIES:
                raise TapeoutError(
                    f"field {name!r}: unknown scaling {value!r}; known: {', '.join(GRANULARITIES)}"
                )
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise TapeoutError(f"field 'block': {self.block!r} is not a positive whole number of elements")

    @classmethod
    def of(cls, precision: str) -> FormatPolicy:
        """The default policy for `precision`: e4m3 for fp8, per-channel weights, per-tensor
        activations."""
        return cls(precision=precision)

    @property
    def operand_format(self) -> Format:
        """The format the matrix products read."""
        return FORMATS[self.fp8_format if self.precision == "fp8" else self.precision]

    @property
    def storage_format(self) -> Format:
        """The format values are stored in between ops."""
        return FORMATS[at_least_16(parse(self.precision, "precision", POLICY_PRECISIONS))]

    def to_dict(self) -> dict[str, Any]:
        return {
            f: getattr(self, f)
            for f in ("precision", "fp8_format", "weight_scaling", "activation_scaling", "block")
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Scales:
    """Calibrated amax per operand of each matrix product, keyed `"<node>:<argument index>"`,
    shaped as `formats.amax` returns for the operand's scaling; `scales` gives the multipliers."""

    policy: FormatPolicy
    amax: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def scales(self) -> dict[str, torch.Tensor]:
        """The scale each operand is multiplied by before it is stored in the policy's format."""
        fmt = self.policy.operand_format
        return {key: scale_of(value, fmt) for key, value in self.amax.items()}

    def to_json(self) -> str:
        values = {k: {"shape": list(v.shape), "values": v.flatten().tolist()} for k, v in self.amax.items()}
        return json.dumps({"version": 1, "policy": self.policy.to_dict(), "amax": values})

    @classmethod
    def from_json(cls, text: str) -> Scales:
        """The scales `to_json` wrote."""
        try:
            data = json.loads(text)
            policy = FormatPolicy(**data["policy"])
            values = {
                str(k): torch.tensor(v["values"], dtype=torch.float32).reshape(v["shape"])
                for k, v in data["amax"].items()
            }
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise TapeoutError(f"scales: not a scales document written by Scales.to_json ({exc})") from exc
        return cls(policy=policy, amax=values)


def _operand_kinds(graph: fx.Graph) -> dict[str, str]:
    """For each operand of each matrix product, `weight` (a parameter, through views),
    `selected` (parameter rows chosen by the input, as experts gathered per token) or nothing
    (an activation)."""
    kinds: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_function" or op_name(node.target) not in OPERANDS:
            continue
        for index, _ in OPERANDS[op_name(node.target)]:
            source, selected = node.args[index] if index < len(node.args) else None, False
            while isinstance(source, fx.Node) and source.op == "call_function":
                name = op_name(source.target)
                if name not in SAME_VALUES | SELECTS:
                    break
                selected |= name in SELECTS
                source = source.args[0]
            if isinstance(source, fx.Node) and source.op == "get_attr":
                kinds[f"{node.name}:{index}"] = "selected" if selected else "weight"
    return kinds


def _rule(node: fx.Node) -> str:
    name = op_name(node.target)
    if name in OPERANDS:
        return "matmul"
    if name in DROP:
        return "drop"
    if name in LAYOUT or name in EXPLICIT or node.target is operator.getitem:
        return "as_is"
    return "compute"


def _opaque(target: Any) -> bool:
    return getattr(target, "namespace", None) not in (None, "aten", "prims")


def _k(x: torch.Tensor, k_axis: int) -> int:
    return k_axis if x.dim() >= -k_axis else -1  # a vector operand reduces over its only axis


class Emulator(fx.Interpreter):
    """The graph run in `policy`'s formats. Weights are quantised once per emulator and reused
    across runs; `scales` (from `calibrate`) fixes the activations' scales, else each run
    observes them on its own inputs (current scaling). `rules` says how each node runs
    (`matmul`, `compute`, `as_is`, `drop`), `kinds` which matrix operands are weights
    (`weight`, `selected`), `weights` holds the quantised weights, `opaque` the ops of other
    libraries, run whole in fp32 with only their results stored. `keep_values` keeps every
    node's value in `env` after a run.

    >>> # Emulator(gm, FormatPolicy.of("bf16")).run(*inputs)
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        policy: FormatPolicy,
        scales: Scales | None = None,
        *,
        keep_values: bool = False,
    ) -> None:
        super().__init__(gm, garbage_collect_values=not keep_values)
        self.policy, self.calibrated = policy, scales
        self.storage, self.operand = policy.storage_format, policy.operand_format
        self.rules = {n: _rule(n) for n in gm.graph.nodes if n.op == "call_function"}
        self.kinds = _operand_kinds(gm.graph)
        self.opaque = tuple(sorted({str(n.target) for n in self.rules if _opaque(n.target)}))
        self._attrs: dict[str, Any] = {}
        self.weights: dict[str, torch.Tensor] = {}
        self._node: fx.Node | None = None

    def store(self, value: Any) -> Any:
        """`value` with every floating tensor in it as fp32 holding storage-format values."""
        if isinstance(value, torch.Tensor):
            if value.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
                return round_to(value, self.storage)
            return value
        if isinstance(value, tuple | list):
            return type(value)(self.store(v) for v in value)
        if isinstance(value, dict):
            return {k: self.store(v) for k, v in value.items()}
        return value

    def run_node(self, n: fx.Node) -> Any:
        self._node = n
        return super().run_node(n)

    def placeholder(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.store(super().placeholder(target, args, kwargs))

    def get_attr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if target not in self._attrs:
            value = super().get_attr(target, args, kwargs)
            self._attrs[target] = _stored(value, self.storage) if isinstance(value, torch.Tensor) else value
        return self._attrs[target]

    def call_function(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        assert self._node is not None
        value = self.evaluate(self._node, args, kwargs)
        if isinstance(value, torch.Tensor) and op_name(target) in UNINITIALISED:
            value.zero_()  # unspecified contents: zeros, the same in every run (a bisection compares them)
        return value

    def output(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The graph's results, in the dtypes the graph gives them."""
        assert self._node is not None
        return fx.node.map_arg(self._node.args[0], lambda n: _as_dtype(self.env[n], n.meta.get("val")))

    def evaluate(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The value of `node` in the policy's formats, given its arguments."""
        rule = self.rules[node]
        if rule == "drop":
            return None
        if rule == "as_is":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if rule == "matmul":
            args = self._operands(node, args)
        return self.store(node.target(*args, **kwargs))  # type: ignore[operator]

    def _operands(self, node: fx.Node, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not self.operand.scaled and self.operand is self.storage:
            return args  # stored values are what the matrix unit reads
        out = list(args)
        for index, k_axis in OPERANDS[op_name(node.target)]:
            if index < len(out) and isinstance(out[index], torch.Tensor) and out[index].is_floating_point():
                out[index] = self._operand(f"{node.name}:{index}", out[index], k_axis)
        return tuple(out)

    def _operand(self, key: str, x: torch.Tensor, k_axis: int) -> torch.Tensor:
        if not self.operand.scaled:
            return round_to(x, self.operand)
        kind = self.kinds.get(key)
        if kind == "weight" and key in self.weights:
            return self.weights[key]
        granularity = self._granularity(kind)
        k = _k(x, k_axis)
        value = fake_quantize(
            x, self.operand, self.amax_of(key, x, kind, k), granularity, k_axis=k, block=self.policy.block
        )
        if kind == "weight":
            self.weights[key] = value
        return value

    def _granularity(self, kind: str | None) -> Granularity:
        scaling = (
            self.policy.weight_scaling if kind in ("weight", "selected") else self.policy.activation_scaling
        )
        return scaling  # type: ignore[return-value]  # checked by FormatPolicy

    def amax_of(self, key: str, x: torch.Tensor, kind: str | None, k_axis: int) -> torch.Tensor:
        """The operand's amax: calibrated when scales are given (rows chosen by the input always
        take their own), else observed on `x`."""
        granularity = self._granularity(kind)
        if self.calibrated is None or kind == "selected":
            return amax(x, granularity, k_axis=k_axis, block=self.policy.block)
        assert self.calibrated is not None
        if key not in self.calibrated.amax:
            raise TapeoutError(f"scales: no amax for operand {key!r}; calibrate on this graph")
        value = self.calibrated.amax[key]
        expected = amax_shape(tuple(x.shape), granularity, k_axis=k_axis, block=self.policy.block)
        if tuple(value.shape) != expected:
            raise TapeoutError(
                f"scales: amax of operand {key!r} has shape {list(value.shape)}, the operand needs "
                f"{list(expected)} for {granularity} scaling"
            )
        return value


# Parameters as stored in a format, kept while the parameter lives and until it is changed in
# place (its version moves): repeated runs of one graph round its weights once.
_STORED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _stored(tensor: torch.Tensor, fmt: Format) -> torch.Tensor:
    if not tensor.is_floating_point() or tensor.dtype == fmt.dtype:
        return tensor
    key = (fmt.name, tensor._version)
    try:
        stored: torch.Tensor = _STORED[tensor][key]
    except KeyError:  # first use, or changed in place since
        stored = round_to(tensor.detach(), fmt)
        _STORED[tensor] = {key: stored}
    return stored


def _as_dtype(value: Any, meta: Any) -> Any:
    floats = isinstance(value, torch.Tensor) and isinstance(meta, torch.Tensor) and meta.is_floating_point()
    return value.to(meta.dtype) if floats and value.dtype != meta.dtype else value


class _Observer(Emulator):
    """The fp32 graph, recording the amax each matrix operand would be scaled with."""

    def __init__(self, gm: fx.GraphModule, policy: FormatPolicy) -> None:
        super().__init__(gm, FormatPolicy.of("fp32"))
        self.target_policy = policy
        self.observed: dict[str, torch.Tensor] = {}

    def _operands(self, node: fx.Node, args: tuple[Any, ...]) -> tuple[Any, ...]:
        policy = self.target_policy
        for index, k_axis in OPERANDS[op_name(node.target)]:
            key, x = f"{node.name}:{index}", args[index] if index < len(args) else None
            kind = self.kinds.get(key)
            if isinstance(x, torch.Tensor) and x.is_floating_point() and kind != "selected":
                scaling = policy.weight_scaling if kind == "weight" else policy.activation_scaling
                self.observed[key] = amax(x, scaling, k_axis=_k(x, k_axis), block=policy.block)  # type: ignore[arg-type]
        return args


def calibrate(gm: fx.GraphModule, example_args: tuple[Any, ...], policy: FormatPolicy) -> Scales:
    """The amax of every matrix operand on the fp32 run of `example_args`, per tensor, channel
    or block as `policy` scales it. Formats without scales (bf16, fp32) need none.

    >>> # calibrate(gm, (ids,), FormatPolicy.of("fp8")).amax["mm:1"].shape -> [1, out_features]
    """
    if not policy.operand_format.scaled:
        return Scales(policy=policy)
    observer = _Observer(gm, policy)
    with torch.no_grad():
        observer.run(*example_args)
    return Scales(policy=policy, amax=observer.observed)


def emulate(
    gm: fx.GraphModule, args: tuple[Any, ...], policy: FormatPolicy, scales: Scales | None = None
) -> Any:
    """What `gm(*args)` returns, computed in `policy`'s formats (see the module notes).

    >>> # logits = emulate(gm, (ids,), FormatPolicy.of("bf16"))
    """
    with torch.no_grad():
        return Emulator(gm, policy, scales).run(*args)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpError:
    """One op's relative error against the fp32 graph: `local` when it runs in the target's
    formats on the exact (fp32) inputs, the error it makes itself; `propagated` along the
    emulated run, the error it carries."""

    node: str
    op: str
    shape: tuple[int, ...]
    local: float
    propagated: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Bisection:
    """Every computing op's error under `policy`, in graph order, and the graph's output error.
    `first` is the first op whose own error passes `tolerance`; `first_propagated` the first
    whose carried error does."""

    policy: FormatPolicy
    tolerance: float
    ops: tuple[OpError, ...]
    output: float
    opaque: tuple[str, ...] = ()

    @property
    def first(self) -> OpError | None:
        return next((e for e in self.ops if e.local > self.tolerance), None)

    @property
    def first_propagated(self) -> OpError | None:
        return next((e for e in self.ops if e.propagated > self.tolerance), None)

    def table(self, limit: int | None = None) -> str:
        """A text table: node, op, shape, local and propagated error (%), the first ops marked."""
        marks = {id(self.first): "first local", id(self.first_propagated): "first propagated"}
        if self.first is not None and self.first is self.first_propagated:
            marks[id(self.first)] = "first local and propagated"
        lines = [f"{'node':<28} {'op':<24} {'shape':<18} {'local %':>9} {'carried %':>9}"]
        for e in self.ops[:limit]:
            shape = "x".join(map(str, e.shape))
            mark = f"  <- {marks[id(e)]} over {100 * self.tolerance:g} %" if id(e) in marks else ""
            lines.append(
                f"{e.node:<28} {e.op:<24} {shape:<18} {100 * e.local:>9.3f} {100 * e.propagated:>9.3f}{mark}"
            )
        lines.append(f"output error {100 * self.output:.3f} % ({self.policy.precision}, {len(self.ops)} ops)")
        if self.opaque:
            lines.append(f"run whole in fp32, results stored only: {', '.join(self.opaque)}")
        return "\n".join(lines)


def bisect(
    gm: fx.GraphModule,
    args: tuple[Any, ...],
    policy: FormatPolicy,
    scales: Scales | None = None,
    tolerance: float = 0.05,
) -> Bisection:
    """The fp32 graph and its emulation in `policy` run side by side; each computing op's error
    on the exact inputs and along the emulated run (layout ops are left out: they add none).

    >>> # bisect(gm, (ids,), FormatPolicy.of("fp8"), tolerance=0.1).first
    """
    if not (isinstance(tolerance, int | float) and tolerance > 0):
        raise TapeoutError(
            f"field 'tolerance': {tolerance!r} is not a positive relative error (unit: fraction)"
        )
    reference = Emulator(gm, FormatPolicy.of("fp32"), keep_values=True)
    emulated = Emulator(gm, policy, scales, keep_values=True)
    rows = []
    with torch.no_grad():
        expected, got = reference.run(*args), emulated.run(*args)
        for node in gm.graph.nodes:
            if node.op != "call_function" or emulated.rules[node] not in ("matmul", "compute"):
                continue
            if op_name(node.target) in UNINITIALISED:  # no value to compare: never written yet
                continue
            exact = reference.env[node]
            if not any(t.is_floating_point() for t in tensors(exact)):
                continue
            inputs, kw = fx.node.map_arg((node.args, node.kwargs), lambda n: reference.env[n])
            local = emulated.evaluate(node, emulated.store(inputs), emulated.store(dict(kw)))
            shape = next((tuple(t.shape) for t in tensors(exact)), ())
            rows.append(
                OpError(node=node.name, op=op_name(node.target), shape=shape, local=relative_error(local, exact),
                        propagated=relative_error(emulated.env[node], exact))
            )  # fmt: skip
    return Bisection(
        policy=policy,
        tolerance=float(tolerance),
        ops=tuple(rows),
        output=relative_error(got, expected),
        opaque=emulated.opaque,
    )
