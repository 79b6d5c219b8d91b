"""Capture: a PyTorch model and its example inputs to one decomposed ATen graph.

`torch.export` traces the model ahead of time; `run_decompositions` lowers it to core ATen with
our table: the default core-ATen decompositions minus the ops a chip runs whole (linear and the
matrix products, scaled-dot-product attention, layer and RMS norms, SiLU, GELU, softmax,
embedding and embedding-bag), so the lowering sees one attention, not its mask machinery, and
one linear, not a transpose and an `addmm`. The same table serves `torch.compile` (`backend`).
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import torch  # noqa: TID251  (the compiler is the one place torch is imported)
from torch._decomp import core_aten_decompositions  # noqa: TID251

from tapeout.errors import TapeoutError

A = torch.ops.aten
# The ops a chip executes whole: decomposing them would hide what they are.
KEPT: tuple[Any, ...] = (
    A.linear.default,
    A.addmm.default,
    A.mm.default,
    A.bmm.default,
    A.matmul.default,
    A.scaled_dot_product_attention.default,
    A._scaled_dot_product_flash_attention_for_cpu.default,
    A.layer_norm.default,
    A.native_layer_norm.default,
    A.rms_norm.default,
    A._fused_rms_norm.default,
    A.silu.default,
    A.gelu.default,
    A.softmax.int,
    A._softmax.default,
    A.log_softmax.int,
    A._log_softmax.default,
    A.embedding.default,
    A.embedding_bag.default,
    A._embedding_bag.default,
    A.embedding_dense_backward.default,
)

# A dynamic dimension: (input index, dim index) -> its name ("batch", "seq").
DynamicDims = Mapping[int, Mapping[int, str]]


@cache
def decomposition_table() -> dict[Any, Callable[..., Any]]:
    """Core ATen decompositions without the ops in `KEPT`."""
    table = dict(core_aten_decompositions())
    for op in KEPT:
        table.pop(op, None)
    return table


def export(
    model: torch.nn.Module, example_inputs: Sequence[Any], dynamic: DynamicDims | None = None
) -> torch.fx.GraphModule:
    """The decomposed graph of `model` on `example_inputs` (parameters and buffers are attributes of
    the module; its placeholders are the user inputs). `dynamic` names the dimensions exported as
    symbols: `{0: {0: "batch", 1: "seq"}}` makes the first input's first two dimensions free."""
    if not isinstance(model, torch.nn.Module):
        raise TapeoutError(f"field 'model': expected a torch.nn.Module, got {type(model).__name__}")
    args = tuple(example_inputs)
    shapes = _dynamic_shapes(args, dynamic) if dynamic else None
    try:
        with warnings.catch_warnings():  # torch's own deprecation inside export, nothing the user can change
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.export.export(model, args, dynamic_shapes=shapes)
            module: torch.fx.GraphModule = program.run_decompositions(decomposition_table()).module()
            return module
    except TapeoutError:
        raise
    except Exception as exc:
        raise TapeoutError(f"model does not export: {_why(exc)}") from exc


def _dynamic_shapes(args: tuple[Any, ...], dynamic: DynamicDims) -> tuple[Any, ...]:
    dims: dict[str, Any] = {}
    shapes: list[Any] = []
    for i, arg in enumerate(args):
        spec = dynamic.get(i)
        if not spec:
            shapes.append(None)
            continue
        if not isinstance(arg, torch.Tensor):
            raise TapeoutError(f"field 'dynamic': input {i} is not a tensor ({type(arg).__name__})")
        entry = {}
        for d, name in spec.items():
            if not 0 <= d < arg.dim():
                raise TapeoutError(f"field 'dynamic': input {i} has {arg.dim()} dims, no dim {d}")
            if name not in dims:
                dims[name] = torch.export.Dim(name, min=1, max=1 << 20)
            entry[d] = dims[name]
        shapes.append(entry)
    return tuple(shapes)


def _why(exc: BaseException) -> str:
    """The first line of PyTorch's reason and the model's source line that raised it."""
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "site-packages/torch" not in f.filename]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
    return f"{type(exc).__name__}: {reason}{where}"
