"""Output gradients that never come, made only where the backward reads them.

A model that returns its loss beside other tensors (logits, a KV cache) gets a gradient only for
the loss from `loss.backward()`. Eager autograd then skips the other outputs; AOTAutograd's
compiled backward takes a gradient for every differentiable output, and autograd allocates a
tensor of zeros for each missing one before the backward starts: an extra logits-sized buffer
through the whole backward, which eager never holds.

remat's fx backward instead takes None for a missing gradient (`accept_missing_gradients` on the
step's outputs) and reads each output gradient through `zeros_if_none`, placed just before the
first op that reads it: zeros are made there, and freed after their last reader.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
import torch.fx as fx

from remat.capture import returns_scalar_loss
from remat.torch_internals import detect_fake_mode, is_tangent, tree_leaves

_AOT_BACKWARD = "CompiledFunctionBackward"
"""Class name of AOTAutograd's autograd node (torch._functorch._aot_autograd.runtime_wrappers)."""
_SEARCH_DEPTH = 4
"""Autograd nodes between an output and AOTAutograd's node: views regenerated outside it."""


def zeros_if_none(
    gradient: torch.Tensor | None,
    shape: list[int],
    dtype: torch.dtype,
    device: torch.device,
    planned_absent: bool = False,
) -> torch.Tensor:
    """`gradient`, or zeros of the output's shape, dtype and device where none came.

    A gradient that comes where the plan counted none (the caller also backpropagates through
    an output beside the loss) is memory the plan did not count from the backward's start: say
    so, with the way to count it."""
    if gradient is not None:
        if planned_absent:
            warnings.warn(
                "an output beside the model's loss received a gradient, which remat planned "
                "as never coming; its bytes were not counted from the start of the backward, "
                "so the budget may be exceeded: pass loss_reserve= (bytes your loss code "
                "holds) to remat.compile",
                RuntimeWarning,
                stacklevel=2,
            )
        return gradient
    return torch.zeros(shape, dtype=dtype, device=device)


def defer_tangents(joint: fx.GraphModule, absent: Iterable[str]) -> tuple[fx.Node, ...]:
    """Read every tangent placeholder of `joint` through `zeros_if_none`, inserted before its
    first reader. Tangents named in `absent` are planned as missing: the new node gets a tensor
    of its own (the zeros it makes); the others alias the gradient that comes."""
    absent = set(absent)
    graph = joint.graph
    placeholders = list(graph.find_nodes(op="placeholder"))
    tangents = [n for n in placeholders if is_tangent(n)]
    order = {node: index for index, node in enumerate(graph.nodes)}
    made = []
    for tangent in tangents:
        value = tangent.meta.get("val")
        readers = [u for u in tangent.users if u.op != "output"]
        if not isinstance(value, torch.Tensor) or not readers:
            continue
        first = min(readers, key=order.__getitem__)
        with graph.inserting_before(first):
            node = graph.call_function(
                zeros_if_none,
                (tangent, list(value.shape), value.dtype, value.device, tangent.name in absent),
            )
        node.meta = {k: v for k, v in tangent.meta.items() if k != "desc"}
        if tangent.name in absent:
            node.meta["val"] = _fresh_like(value)
        for reader in readers:
            reader.replace_input_with(tangent, node)
        made.append(node)
    return tuple(made)


def accept_missing_gradients(outputs: object) -> None:
    """Let AOTAutograd's node behind `outputs` pass None for outputs that get no gradient, so
    autograd does not allocate their zeros (the fx backward makes them where it reads them)."""
    for leaf in tree_leaves(outputs):
        if isinstance(leaf, torch.Tensor) and leaf.grad_fn is not None:
            node = _aot_node(leaf.grad_fn)
            if node is not None:
                node.set_materialize_grads(False)


def _aot_node(start: object) -> object | None:
    frontier = [start]
    for _ in range(_SEARCH_DEPTH):
        following = []
        for node in frontier:
            if type(node).__name__ == _AOT_BACKWARD:
                return node
            following.extend(n for n, _ in getattr(node, "next_functions", ()) if n is not None)
        frontier = following
    return None


def _fresh_like(value: torch.Tensor) -> torch.Tensor:
    """A tensor like `value` with storage of its own (a fake tensor under the joint's mode)."""
    mode = detect_fake_mode([value])
    if mode is None:
        return torch.empty_like(value)
    with mode:
        return torch.empty_like(value)


def absent_tangents(
    joint: fx.GraphModule, num_fwd_outputs: int, loss_reserve: int | None
) -> frozenset[str]:
    """Output gradients planned as never coming: with a scalar loss among the outputs and
    no `loss_reserve` (the caller adds no loss of its own), only the loss is differentiated,
    so every other output's gradient is the zeros `zeros_if_none` makes where it is read."""
    if loss_reserve is not None or not returns_scalar_loss(joint, num_fwd_outputs):
        return frozenset()
    return frozenset(
        n.name
        for n in joint.graph.find_nodes(op="placeholder")
        if is_tangent(n) and isinstance(value := n.meta.get("val"), torch.Tensor) and value.ndim > 0
    )
