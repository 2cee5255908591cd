"""Copies the traced joint graph makes that eager does not: dropped before remat prices it.

Tracing turns an identity into a copy: `F.dropout(x, p=0.0)` (attention and residual dropout
configured off, as in Llama's and many fine-tuning configs) and `nn.Identity`-style aliasing
become `aten.clone` in the functional joint graph, where eager returns its input. Run as fx code
each clone is a real allocation and a memory pass, so with nothing recomputed the step was both
slower and larger than eager's. A clone can go when nothing could tell it apart from its input:
the input is an intermediate (not a graph input: AOTAutograd decided the outputs' aliasing
before the partition), neither is a graph output nor viewed by one, nothing writes into
either, and the clone has the input's strides (so a later `view` sees the same layout).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from remat.fx_nodes import ancestors, writes_an_argument
from remat.torch_internals import tree_leaves


def drop_redundant_clones(joint: fx.GraphModule) -> int:
    """Replace each droppable `aten.clone` by its input, in place; returns how many went."""
    graph = joint.graph
    (output,) = [node for node in graph.nodes if node.op == "output"]
    # the outputs and what they are views of: a view of a dropped clone would alias its input
    outputs = (leaf for leaf in tree_leaves(output.args) if isinstance(leaf, fx.Node))
    returned = ancestors(outputs, _viewed)
    dropped = 0
    for node in list(graph.nodes):
        if not _droppable(node, returned):
            continue
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
        dropped += 1
    if dropped:
        joint.recompile()
    return dropped


def _viewed(node: fx.Node) -> list[fx.Node]:
    """The node a view op returns a view of (none for other ops)."""
    schema = getattr(node.target, "_schema", None)
    returns_view = schema is not None and any(r.alias_info is not None for r in schema.returns)
    source = node.args[0] if returns_view and node.args else None
    return [source] if isinstance(source, fx.Node) else []


def _droppable(node: fx.Node, returned: set[fx.Node]) -> bool:
    if node.op != "call_function" or node.target is not torch.ops.aten.clone.default:
        return False
    (source,) = node.args
    layout = node.kwargs.get("memory_format", torch.preserve_format)
    if not isinstance(source, fx.Node) or source.op != "call_function":
        return False
    if layout is not torch.preserve_format or node in returned or source in returned:
        return False
    copy, original = node.meta.get("val"), source.meta.get("val")
    if not isinstance(copy, torch.Tensor) or not isinstance(original, torch.Tensor):
        return False
    if copy.stride() != original.stride() or copy.dtype != original.dtype:
        return False
    return not any(_writes(user) for user in (*node.users, *source.users) if user is not node)


def _writes(node: fx.Node) -> bool:
    """The node may write into one of its arguments (an in-place or out= op)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:  # the output node, getitem; anything else unknown counts as writing
        return node.op == "call_function" and node.target is not operator.getitem
    return writes_an_argument(schema)
