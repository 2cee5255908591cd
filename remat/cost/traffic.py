"""What kind of work an fx node does, and the bytes it reads and writes.

Bytes here are memory *traffic* for the roofline, not storage ownership: a view reads and writes
nothing (it only makes new metadata), an in-place op writes the tensor it mutates, and a broadcast
input is read once per distinct element, not once per output element.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable, Iterator

import torch
from torch import fx

from remat.cost.flops import as_int, node_value
from remat.torch_internals import FunctionSchema, HigherOrderOperator, OpOverload

aten = torch.ops.aten


class OpKind(enum.Enum):
    NONE = "none"
    """Not a computation: placeholder, get_attr, output."""
    METADATA = "metadata"
    """Touches no tensor data: getitem, size queries, asserts, ops on Python scalars."""
    VIEW = "view"
    """Returns an alias of an input's storage; no data moves."""
    ALLOC = "alloc"
    """Allocates without writing (torch.empty and friends)."""
    COMPUTE = "compute"
    """Reads and writes tensor data."""


# Ops whose schema returns a fresh tensor although the kernel returns an alias of the input.
_HIDDEN_VIEWS = frozenset({aten._unsafe_view.default})
_UNINITIALIZED = frozenset(
    {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"}
)


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def classify(node: fx.Node) -> OpKind:
    if node.op != "call_function":
        return OpKind.NONE
    target = node.target
    if target is operator.getitem:
        return OpKind.METADATA
    if isinstance(target, OpOverload):
        if target.is_view or target in _HIDDEN_VIEWS:
            return OpKind.VIEW
        if target.overloadpacket.__name__ in _UNINITIALIZED:
            return OpKind.ALLOC
        if not _writes_tensors(node, target):
            return OpKind.METADATA
        return OpKind.COMPUTE
    if isinstance(target, HigherOrderOperator):
        return OpKind.COMPUTE
    # Python callables on SymInts (operator.mul, sym_sum, ...) compute shapes, not data.
    return OpKind.METADATA


_VARIANTS = {
    "gelu": ("approximate", {"tanh": ":tanh"}),
    "gelu_backward": ("approximate", {"tanh": ":tanh"}),
}
"""Ops whose kernel depends on an argument: (its name, suffix per value). tanh-GELU runs ~3x
slower than erf-GELU on CPU (cost/calibrate.py measures both)."""


def kernel_name(node: fx.Node) -> str | None:
    """The name a device profile's slowdowns know an op by: its aten packet, with a suffix
    where an argument picks another kernel (`gelu:tanh`); None for what is not an aten op."""
    target = node.target
    if not isinstance(target, OpOverload):
        return None
    name = target.overloadpacket.__name__
    variant = _VARIANTS.get(name)
    if variant is not None:
        argument, suffixes = variant
        value = _bind(node, target._schema).get(argument)
        if isinstance(value, (str, int, float)) and value in suffixes:
            return name + suffixes[value]
    return name


def _writes_tensors(node: fx.Node, target: OpOverload) -> bool:
    val = node.meta.get("val")
    if val is None and target._schema.returns:
        return True  # no fake value to inspect: assume it computes rather than price it at 0
    return any(True for _ in _tensors(val)) or target._schema.is_mutable


def tensor_footprint(tensor: torch.Tensor) -> int:
    """Bytes of distinct elements a kernel touches: an expanded input counts once per element."""
    size = tensor.element_size()
    if tensor.layout != torch.strided:
        return as_int(tensor.numel()) * size
    shape = [as_int(s) for s in tensor.shape]
    if any(s == 0 for s in shape):
        return 0
    numel = 1
    span = 1
    for extent, stride in zip(shape, tensor.stride(), strict=True):
        numel *= extent
        span += (extent - 1) * abs(as_int(stride))
    return min(numel, span) * size


def _unique_tensors(values: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    unique = []
    for tensor in values:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique.append(tensor)
    return unique


def _arg_values(node: fx.Node) -> list[object]:
    args = fx.node.map_aggregate(node.args, node_value)
    kwargs = fx.node.map_aggregate(node.kwargs, node_value)
    return [args, kwargs]


def _written(node: fx.Node) -> list[torch.Tensor]:
    """Tensors the op writes: its fresh outputs plus the arguments it mutates in place."""
    target = node.target
    if not isinstance(target, OpOverload):
        return list(_tensors(node.meta.get("val")))
    schema = target._schema
    written: list[torch.Tensor] = []
    bound = _bind(node, schema)
    for argument in schema.arguments:
        if argument.alias_info is not None and argument.alias_info.is_write:
            written.extend(_tensors(bound.get(argument.name)))
    val = node.meta.get("val")
    outputs = val if len(schema.returns) > 1 and isinstance(val, (list, tuple)) else (val,)
    for ret, out in zip(schema.returns, outputs, strict=False):
        if ret.alias_info is None:  # aliased returns were counted as mutated arguments
            written.extend(_tensors(out))
    return _unique_tensors(written)


def _bind(node: fx.Node, schema: FunctionSchema) -> dict[str, object]:
    bound: dict[str, object] = {}
    positional = [a for a in schema.arguments if not a.kwarg_only]
    for argument, value in zip(positional, node.args, strict=False):  # defaults omitted
        bound[argument.name] = fx.node.map_aggregate(value, node_value)
    for name, value in node.kwargs.items():
        bound[name] = fx.node.map_aggregate(value, node_value)
    return bound


def _reads_data(node: fx.Node) -> bool:
    # `ones_like(x)`, `new_zeros(x, ...)` read only x's metadata.
    target = node.target
    if isinstance(target, OpOverload):
        name = target.overloadpacket.__name__
        return not (name.endswith("_like") or name.startswith("new_"))
    return True


def node_bytes(node: fx.Node, kind: OpKind | None = None) -> tuple[int, int]:
    """(bytes read, bytes written) by one execution of `node`."""
    kind = classify(node) if kind is None else kind
    if kind is not OpKind.COMPUTE:
        return 0, 0
    read = 0
    if _reads_data(node):
        inputs = _unique_tensors(_tensors(_arg_values(node)))
        read = sum(tensor_footprint(t) for t in inputs)
    written = sum(tensor_footprint(t) for t in _written(node))
    return read, written
