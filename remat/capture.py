"""Joint forward+backward fx graph (from AOTAutograd) -> RematGraph, plus the map back to fx.

Time on ops, bytes on tensors: every call_function node except `getitem` is an op; a single-output
op's node is its tensor, a multi-output op's tensors are its `getitem` nodes. Storage identity of
the traced fake values decides aliasing: the first tensor seen on a storage owns its bytes, every
later one (views, `detach`, `_unsafe_view`, ...) is an alias that costs nothing. What each fx
node is (its kind, module path, randomness, purity) is read by remat.fx_nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.fx as fx

from remat.fx_nodes import (
    allocated_bytes,
    ancestors,
    graph_device,
    is_getitem,
    is_pure,
    is_random,
    is_scalar_loss,
    module_path,
    mutated_placeholders,
    op_kind,
    recompute_safe_with_mutation,
    rng_state_bytes,
)
from remat.ir import Op, Phase, RematGraph, Tensor
from remat.torch_internals import is_tangent


class Priced(Protocol):
    """What capture needs from the cost model about one fx node (remat.cost.NodeCost)."""

    flops: int
    time_s: float


@dataclass(frozen=True)
class _Unpriced:
    flops: int = 0
    time_s: float = 0.0


class UnsupportedGraphError(ValueError):
    """The captured graph has a construct remat cannot plan (the message says which)."""


@dataclass(frozen=True)
class CapturedGraph:
    graph: RematGraph
    op_nodes: tuple[fx.Node | None, ...]
    """fx node of each op id; None for the generator-state op before a random op."""
    tensor_nodes: tuple[fx.Node | None, ...]
    """fx node of each tensor id (placeholder, single-output op, or getitem); None for a
    generator state, which the rewriter creates only where a recomputation replays it."""
    device: torch.device
    mutated_inputs: frozenset[str] = frozenset()
    """Placeholders the step mutates (BatchNorm running stats): a recomputation reads the
    mutated value, which only ops listed in `remat.fx_nodes.READS_MUTATED_SAFELY` tolerate."""


def capture_joint(
    joint: fx.GraphModule,
    num_fwd_outputs: int,
    prices: Mapping[fx.Node, Priced],
    *,
    workspaces: Mapping[fx.Node, int] | None = None,
    storage_bytes: Mapping[fx.Node, int] | None = None,
    boundary_reserve: int | None = None,
    absent_inputs: frozenset[str] = frozenset(),
    name: str = "graph",
) -> CapturedGraph:
    """Build the solver's view of `joint` (a graph of primals_*/tangents_* placeholders).

    `workspaces`: scratch bytes an op allocates and frees inside itself (remat.workspace).
    `storage_bytes`: real storage bytes of results whose fake tensors understate them.
    `absent_inputs`: placeholders that hold None when the step runs (output gradients that
    never come, remat.tangents): they cost nothing.
    """
    workspaces = workspaces or {}
    storage_bytes = storage_bytes or {}
    nodes = list(joint.graph.nodes)
    output_node = next(n for n in reversed(nodes) if n.op == "output")
    outs = list(output_node.args[0])
    fwd_outs = [n for n in outs[:num_fwd_outputs] if isinstance(n, fx.Node)]
    all_outs = [n for n in outs if isinstance(n, fx.Node)]
    live = ancestors(all_outs)
    required_forward = ancestors(fwd_outs)
    device = graph_device(nodes)

    tensor_index: dict[fx.Node, int] = {}
    tensors: list[Tensor] = []
    tensor_nodes: list[fx.Node] = []
    storage_owner: dict[int, int] = {}

    def add_tensor(node: fx.Node, producer: int | None) -> int:
        value = node.meta.get("val")
        size, alias = 0, None
        if isinstance(value, torch.Tensor) and node.name not in absent_inputs:
            key = value.untyped_storage()._cdata
            if key in storage_owner:
                alias = storage_owner[key]
            else:
                storage_owner[key] = len(tensors)
                nbytes = storage_bytes.get(node, value.untyped_storage().nbytes())
                size = allocated_bytes(nbytes, device)
        tensor = Tensor(len(tensors), node.name, size, producer, alias)
        tensor_index[node] = tensor.id
        tensors.append(tensor)
        tensor_nodes.append(node)
        return tensor.id

    placeholders = [n for n in nodes if n.op == "placeholder"]
    mutated = mutated_placeholders(placeholders, output_node)
    tangents = [n for n in placeholders if is_tangent(n)]
    # Tensor constants (`torch.tensor(...)` in a model's forward) exist before the step, like
    # parameters: inputs that cost nothing, which the rewriter reads again wherever needed.
    constants = [n for n in nodes if n.op == "get_attr" and n in live]
    for node in placeholders + constants:
        add_tensor(node, None)

    compute = [n for n in nodes if n.op == "call_function" and n in live and not is_getitem(n)]
    order = [n for n in compute if n in required_forward]
    boundary = len(order)
    order += _backward_order([n for n in compute if n not in required_forward])

    ops: list[Op] = []
    op_nodes: list[fx.Node | None] = []
    state_bytes = rng_state_bytes(device)
    forward_count = boundary
    for position, node in enumerate(order):
        in_forward = position < forward_count
        extra: tuple[int, ...] = ()
        if in_forward and is_random(node):
            # The generator state a recomputation replays: an op of its own, so the state's
            # bytes count from the forward to the recomputation that reads it.
            extra = (_add_state_op(ops, node, tensors, tensor_nodes, state_bytes),)
            op_nodes.append(None)
            boundary += 1
        op = _make_op(
            len(ops), node, add_tensor, tensor_index, prices, workspaces, in_forward, mutated
        )
        if extra:
            op = replace(
                op, inputs=op.inputs + extra, transient_bytes=op.transient_bytes + state_bytes
            )
        ops.append(op)
        op_nodes.append(node)
    if boundary_reserve is None:
        boundary_reserve = default_loss_reserve(
            fwd_outs, [tensors[tensor_index[t]] for t in tangents]
        )
    # The caller's loss scalar and the seed gradient `backward()` creates live through the
    # backward. A graph that returns its loss counts both already (an output and its late
    # input), but the measured step holds one scalar more (seen on ViT, GPT-2 and BERT).
    scalars = 0
    if tangents:
        scalars = 1 if any(is_scalar_loss(n) for n in fwd_outs) else 2
    backward_reserve = scalars * allocated_bytes(4, device)
    graph = RematGraph(
        ops=tuple(ops),
        tensors=tuple(tensors),
        boundary=boundary,
        inputs=tuple(tensor_index[n] for n in placeholders + constants if n not in tangents),
        late_inputs=tuple(tensor_index[n] for n in tangents),
        outputs=tuple(dict.fromkeys(tensor_index[n] for n in all_outs)),
        forward_outputs=tuple(dict.fromkeys(tensor_index[n] for n in fwd_outs)),
        boundary_reserve=boundary_reserve,
        backward_reserve=backward_reserve,
        name=name,
    )
    mutated_names = frozenset(n.name for n in mutated)
    return CapturedGraph(graph, tuple(op_nodes), tuple(tensor_nodes), device, mutated_names)


LOSS_TEMPORARIES = 3
"""Output-sized temporaries a loss computed outside the model may hold at once beside the
output's gradient (which the graph counts): measured by `python -m benchmarks.loss_memory`,
cross-entropy peaks at 3x its input's bytes (2 beside the gradient), MSE at 2x,
`square().mean()` at 4x (3 beside it)."""


def default_loss_reserve(forward_outputs: list[fx.Node], tangents: list[Tensor]) -> int:
    """Bytes to hold for the caller's code between forward and backward.

    A model that returns a scalar loss is differentiated from it: the caller adds nothing. A
    model that returns activations (logits) has its loss computed outside, whose forward and
    backward run between the model's and hold up to LOSS_TEMPORARIES output-sized temporaries
    beside the output's gradient (pass loss_reserve= for the exact figure).
    """
    if any(is_scalar_loss(node) for node in forward_outputs):
        return 0
    return LOSS_TEMPORARIES * sum(t.bytes for t in tangents)


def returns_scalar_loss(joint: fx.GraphModule, num_fwd_outputs: int) -> bool:
    """Among the joint graph's forward outputs is a floating-point scalar: the model's loss."""
    output_node = next(iter(joint.graph.find_nodes(op="output")))
    outs = list(output_node.args[0])[:num_fwd_outputs]
    return any(isinstance(n, fx.Node) and is_scalar_loss(n) for n in outs)


def _add_state_op(
    ops: list[Op], node: fx.Node, tensors: list[Tensor], tensor_nodes: list, size: int
) -> int:
    op_id = len(ops)
    tensor = Tensor(len(tensors), f"rng_state_{node.name}", size, op_id)
    tensors.append(tensor)
    tensor_nodes.append(None)
    ops.append(
        Op(
            op_id,
            f"rng_state_{node.name}",
            "remat.rng_state",
            (),
            (tensor.id,),
            recomputable=False,
            module_path=module_path(node),
        )
    )
    return tensor.id


def _make_op(
    op_id: int,
    node: fx.Node,
    add_tensor: Callable[[fx.Node, int | None], int],
    tensor_index: dict[fx.Node, int],
    prices: Mapping[fx.Node, Priced],
    workspaces: Mapping[fx.Node, int],
    in_forward: bool,
    mutated: set[fx.Node],
) -> Op:
    inputs = []
    for arg in node.all_input_nodes:
        if arg not in tensor_index:
            raise UnsupportedGraphError(
                f"{node.name} reads {arg.name}, which is not a tensor remat can track"
            )
        inputs.append(tensor_index[arg])
    value = node.meta.get("val")
    transient = 0
    if isinstance(value, (tuple, list)):
        getitems = {u.args[1]: u for u in node.users if is_getitem(u)}
        outputs = []
        for index, item in enumerate(value):
            if index in getitems:
                outputs.append(add_tensor(getitems[index], op_id))
            elif isinstance(item, torch.Tensor):
                transient += item.untyped_storage().nbytes()  # allocated, never read
        outputs_tuple = tuple(outputs)
    else:
        outputs_tuple = (add_tensor(node, op_id),)
    transient += workspaces.get(node, 0)
    price = prices.get(node) or _Unpriced()
    return Op(
        id=op_id,
        name=node.name,
        kind=op_kind(node),
        inputs=tuple(dict.fromkeys(inputs)),
        outputs=outputs_tuple,
        time=price.time_s,
        flops=price.flops,
        phase=Phase.FORWARD if in_forward else Phase.BACKWARD,
        # A pure backward op (a detach or view of a saved value) may run again too; only the
        # RNG-state ops and impure ones may not.
        recomputable=is_pure(node)
        and recompute_safe_with_mutation(node, mutated)
        and (in_forward or not is_random(node)),
        random=is_random(node),
        transient_bytes=transient,
        module_path=module_path(node),
    )


def _backward_order(backward: list[fx.Node]) -> list[fx.Node]:
    """The backward ops, each one that reads only forward values (AOTAutograd emits `detach`
    and weight transposes for the backward where their forward op ran, so they would all lead
    the backward) moved to just before its first reader: a plan that recomputes a block's
    forward then recomputes it where that block's backward starts, not before the loss's."""
    in_backward = set(backward)
    floating: set[fx.Node] = set()

    def inputs(node: fx.Node) -> list[fx.Node]:
        # A multi-output op's results are read through its getitems.
        return [a.args[0] if is_getitem(a) else a for a in node.all_input_nodes]

    def reads_forward_only(arg: fx.Node) -> bool:
        if arg in in_backward:
            return arg in floating
        return not is_tangent(arg)

    for node in backward:  # graph order is topological
        if all(reads_forward_only(arg) for arg in inputs(node)):
            floating.add(node)
    order: list[fx.Node] = []
    placed: set[fx.Node] = set()

    def place(node: fx.Node) -> None:
        stack = [(node, False)]
        while stack:
            current, ready = stack.pop()
            if current in placed:
                continue
            if ready:
                placed.add(current)
                order.append(current)
                continue
            stack.append((current, True))
            stack.extend((a, False) for a in reversed(inputs(current)) if a in floating)

    for node in backward:
        if node not in floating:
            place(node)
    for node in backward:  # floating ops only outputs read
        place(node)
    return order
