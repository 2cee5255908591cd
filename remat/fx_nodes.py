"""What capture reads off one fx node of a joint graph: its op kind and module path, whether it
draws random numbers or may run twice, which placeholders the step mutates, and the device bytes
a value takes. Plain functions of fx nodes, no graph building (that is remat.capture).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable

import torch
import torch.fx as fx

from remat.torch_internals import OpOverload

CUDA_BLOCK = 512
"""The CUDA caching allocator rounds every block up to a multiple of 512 bytes."""

READS_MUTATED_SAFELY = {torch.ops.aten._native_batch_norm_legit_functional.default}
"""Ops whose recomputation tolerates a mutated input (see recompute_safe_with_mutation)."""


def is_scalar_loss(node: fx.Node) -> bool:
    value = node.meta.get("val")
    return isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point()


def rng_state_bytes(device: torch.device) -> int:
    """Device bytes of one saved generator state (CUDA keeps its seed and offset on the host)."""
    return torch.get_rng_state().numel() if device.type == "cpu" else 0


def mutated_placeholders(placeholders: list[fx.Node], output_node: fx.Node) -> set[fx.Node]:
    descs = output_node.meta.get("desc") or []
    targets = [getattr(d, "mutated_input", None) for d in descs]
    targets = [t for t in targets if t is not None]
    return {n for n in placeholders if n.meta.get("desc") in targets}


def recompute_safe_with_mutation(node: fx.Node, mutated: set[fx.Node]) -> bool:
    """Recomputing `node` gives the same values though some of its inputs were mutated since.

    Training-mode batch norm reads the running stats only to return their updated copies, which
    the backward never reads; its normalised output and batch statistics do not depend on them.
    """
    if not mutated.intersection(node.all_input_nodes):
        return True
    return node.target in READS_MUTATED_SAFELY and len(node.args) > 5 and node.args[5] is True


def is_random(node: fx.Node) -> bool:
    """Draws random numbers. Fused attention is tagged random for its dropout, which it only
    applies when `dropout_p` > 0 (the usual case in training with dropout off)."""
    target = node.target
    if not isinstance(target, OpOverload):
        return False
    if torch.Tag.nondeterministic_seeded not in target.tags:
        return False
    return _argument(node, "dropout_p", default=1.0) != 0


def _argument(node: fx.Node, name: str, default: object) -> object:
    """The value `node` passes for its schema argument `name` (`default` if it has none)."""
    schema = node.target._schema
    for index, argument in enumerate(schema.arguments):
        if argument.name == name:
            if name in node.kwargs:
                return node.kwargs[name]
            if index < len(node.args):
                return node.args[index]
            return argument.default_value if argument.has_default_value() else default
    return default


def is_pure(node: fx.Node) -> bool:
    """Ops that may run twice: no mutation, no side effect (random ones are replayed)."""
    target = node.target
    if not isinstance(target, OpOverload):
        return False
    schema = target._schema
    if writes_an_argument(schema):
        return False
    return not schema.name.endswith("_")


def writes_an_argument(schema: torch.FunctionSchema) -> bool:
    """The op may write into one of its arguments (in-place, out=, or a mutable schema)."""
    return schema.is_mutable or any(
        a.alias_info is not None and a.alias_info.is_write for a in schema.arguments
    )


def is_getitem(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem


def ancestors(
    roots: Iterable[fx.Node],
    parents: Callable[[fx.Node], Iterable[fx.Node]] = lambda node: node.all_input_nodes,
) -> set[fx.Node]:
    """`roots` and every node reachable from them through `parents` (by default, all inputs)."""
    seen: set[fx.Node] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(parents(node))
    return seen


def graph_device(nodes: list[fx.Node]) -> torch.device:
    for node in nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and value.device.type != "meta":
            return value.device
    return torch.device("cpu")


def allocated_bytes(nbytes: int, device: torch.device) -> int:
    if device.type == "cuda" and nbytes:
        return -(-nbytes // CUDA_BLOCK) * CUDA_BLOCK
    return nbytes


def op_kind(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}"
    return getattr(target, "__name__", str(target))


_SCOPE_PREFIX = re.compile(r"^L\['(?:self|fn|mod|model)'\]\.?")
_INDEX = re.compile(r"\[['\"]?([^'\"\]]+)['\"]?\]")


def module_path(node: fx.Node) -> str:
    """'layers.3.attn' for a node traced inside model.layers[3].attn (Dynamo's module stack)."""
    stack = node.meta.get("nn_module_stack") or node.meta.get("fwd_nn_module_stack")
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    path = _SCOPE_PREFIX.sub("", path)
    path = _INDEX.sub(r".\1", path)
    path = re.sub(r"_modules\.", "", path)
    return path.strip(".")
