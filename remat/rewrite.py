"""Plan -> forward and backward GraphModules in AOTAutograd's calling convention.

The forward takes the primals and returns the step's outputs followed by the values saved for
the backward; the backward takes the saved values and the output gradients and returns the input
gradients. Both bodies follow the plan's schedule: a recomputed op is emitted again just before
the use it serves, and fx frees every value after its last use. New graphs are built;
the joint graph only gains the RNG-state nodes that replayed random ops read.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx

from remat.capture import CapturedGraph, UnsupportedGraphError
from remat.ir import Plan
from remat.torch_internals import (
    SavedForBackwardsAOTOutput,
    SavedForBackwardsNoVcCheckAOTOutput,
    detect_fake_mode,
    is_primal,
    is_tangent,
    run_and_save_rng_state,
    run_with_rng_state,
    split_joint_outputs,
)

RECOMPUTED = "remat_recomputed"
"""Meta key of the nodes of a rewritten graph that rerun an op the step ran before."""


@dataclass(frozen=True)
class RewrittenStep:
    forward: fx.GraphModule
    backward: fx.GraphModule
    saved: tuple[str, ...]
    """Names of the values the forward saves for the backward."""
    replayed_random_ops: tuple[str, ...]


def rewrite(
    joint: fx.GraphModule, captured: CapturedGraph, plan: Plan, num_fwd_outputs: int
) -> RewrittenStep:
    """Build the two modules for `plan`. Adds RNG-state nodes to `joint` (AOTAutograd's copy)."""
    forward_part = list(plan.schedule[: plan.boundary])
    backward_part = list(plan.schedule[plan.boundary :])
    op_nodes = captured.op_nodes
    in_forward = set(forward_part)
    replayed = [
        op_nodes[i]
        for i in dict.fromkeys(backward_part)
        if i in in_forward and captured.graph.ops[i].random
    ]
    preludes, replays = _add_rng_states(joint, replayed)
    saved = _saved_nodes(captured, backward_part) + [r.state for r in replays.values()]
    for node in saved:
        if node.name in captured.mutated_inputs:
            # Only a mutation-tolerant recomputation reads it (see capture); the forward's
            # in-place update of the buffer must not trip autograd's version check.
            node.meta["saved_tensor_with_no_vc_check"] = True
    # AOTAutograd saves the version-checked values first, the unchecked ones after them.
    saved.sort(key=lambda n: bool(n.meta.get("saved_tensor_with_no_vc_check", False)))
    checked = sum(not n.meta.get("saved_tensor_with_no_vc_check", False) for n in saved)
    saved_descs = [
        SavedForBackwardsAOTOutput(i) if i < checked else SavedForBackwardsNoVcCheckAOTOutput(i)
        for i in range(len(saved))
    ]

    fwd_outs, bwd_outs, fwd_descs, bwd_descs = split_joint_outputs(
        joint, num_fwd_outputs=num_fwd_outputs
    )
    placeholders = list(joint.graph.find_nodes(op="placeholder"))
    tangents = [n for n in placeholders if is_tangent(n)]
    primals = [n for n in placeholders if is_primal(n)]
    if len(primals) + len(tangents) != len(placeholders):
        others = [n.name for n in placeholders if n not in primals and n not in tangents]
        raise UnsupportedGraphError(f"remat cannot plan graphs with inputs {others}")

    forward_nodes = _with_getitems([op_nodes[i] for i in forward_part if op_nodes[i]], preludes)
    backward_nodes = _with_getitems([op_nodes[i] for i in backward_part if op_nodes[i]], {})
    ran: set[fx.Node] = set()
    forward = _build(
        joint, primals, forward_nodes, fwd_outs + saved, fwd_descs + saved_descs, ran=ran
    )
    backward = _build(
        joint, saved + tangents, backward_nodes, bwd_outs, bwd_descs, replays, ran=ran
    )
    return RewrittenStep(
        forward, backward, tuple(n.name for n in saved), tuple(n.name for n in replays)
    )


def _saved_nodes(captured: CapturedGraph, backward_part: list[int]) -> list[fx.Node]:
    """Tensors the backward part reads that it did not make itself: the forward's or inputs."""
    graph = captured.graph
    made_in_backward: set[int] = set()
    saved: dict[int, None] = {}
    late = set(graph.late_inputs)
    for op_id in backward_part:
        op = graph.ops[op_id]
        for tensor in op.inputs:
            if tensor not in made_in_backward and tensor not in late:
                saved[tensor] = None
        made_in_backward.update(op.outputs)
    # Generator states have no node yet: `_add_rng_states` makes them, and they are saved then.
    nodes = [captured.tensor_nodes[t] for t in saved]
    # Constants are module attributes: the backward reads them itself, nothing is saved.
    return [n for n in nodes if n is not None and n.op != "get_attr"]


@dataclass(frozen=True)
class _Replay:
    """How a recomputed random op reruns: its original call, from the forward's saved state."""

    state: fx.Node
    target: object
    args: tuple
    kwargs: dict


def _add_rng_states(
    joint: fx.GraphModule, random_nodes: list[fx.Node]
) -> tuple[dict[fx.Node, list[fx.Node]], dict[fx.Node, _Replay]]:
    """Make each recomputed random op save the generator state it draws from.

    `node = op(*args)` becomes `pair = run_and_save_rng_state(op, *args); state = pair[0];
    node = pair[1]` (PyTorch's own HOPs, which Inductor understands too); a backward run is
    `run_with_rng_state(state, op, *args)`, which restores the generator afterwards.
    """
    preludes: dict[fx.Node, list[fx.Node]] = {}
    replays: dict[fx.Node, _Replay] = {}
    if not random_nodes:
        return preludes, replays
    fake_mode = detect_fake_mode([n.meta.get("val") for n in joint.graph.nodes])
    for node in random_nodes:
        value = node.meta["val"]
        device = (value[0] if isinstance(value, (tuple, list)) else value).device
        example = torch.get_rng_state() if device.type == "cpu" else _device_state(device)
        if fake_mode is not None:
            with fake_mode:
                example = torch.empty(example.shape, dtype=example.dtype, device=example.device)
        target, args, kwargs = node.target, node.args, dict(node.kwargs)
        with joint.graph.inserting_before(node):
            pair = joint.graph.call_function(run_and_save_rng_state, (target, *args), kwargs)
            state = joint.graph.call_function(operator.getitem, (pair, 0))
        pair.meta["val"] = (example, value)
        state.meta["val"] = example
        node.target, node.args, node.kwargs = operator.getitem, (pair, 1), {}
        preludes[node] = [pair, state]
        replays[node] = _Replay(state, target, args, kwargs)
    return preludes, replays


def _device_state(device: torch.device) -> torch.Tensor:
    return getattr(torch, device.type).get_rng_state(device)


def _with_getitems(nodes: list[fx.Node], preludes: dict[fx.Node, list[fx.Node]]) -> list[fx.Node]:
    """Each op followed by the getitems that project its outputs; RNG saves before their op."""
    sequence: list[fx.Node] = []
    for node in nodes:
        sequence.extend(preludes.get(node, ()))
        sequence.append(node)
        sequence.extend(u for u in node.users if u.target is operator.getitem)
    return sequence


def _build(
    joint: fx.GraphModule,
    inputs: Sequence[fx.Node],
    sequence: Sequence[fx.Node],
    outputs: Sequence[fx.Node | None],
    descs: Sequence[object],
    replays: dict[fx.Node, _Replay] | None = None,
    *,
    ran: set[fx.Node],
) -> fx.GraphModule:
    """A new module: placeholders for `inputs`, a copy of each node of `sequence`, `outputs`.
    A node already in `ran` (emitted earlier in the step) is a recomputation: its copy is
    marked so (RECOMPUTED, read by remat.recompute_ranges); `ran` gains what this emits."""
    replays = replays or {}
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}

    def lookup(arg: fx.Node) -> fx.Node:
        if arg not in env and arg.op == "get_attr":
            # A tensor constant: both modules share the joint's attribute.
            env[arg] = graph.node_copy(arg)
        return env[arg]

    for node in inputs:
        placeholder = graph.placeholder(node.name)
        placeholder.meta = node.meta
        env[node] = placeholder
    for node in sequence:
        if node in replays:
            # A backward run of a forward random op replays the forward's generator state.
            replay = replays[node]
            args = fx.map_arg((replay.state, replay.target, *replay.args), lookup)
            kwargs = fx.map_arg(replay.kwargs, lookup)
            copy = graph.call_function(run_with_rng_state, args, kwargs)
            copy.meta = dict(node.meta)
        else:
            copy = graph.node_copy(node, lookup)
        if node in ran:
            copy.meta[RECOMPUTED] = True
        ran.add(node)
        env[node] = copy  # later reads see the latest run
    output = graph.output(tuple(lookup(n) if isinstance(n, fx.Node) else n for n in outputs))
    output.meta["desc"] = list(descs)
    graph.lint()
    return fx.GraphModule(joint, graph)
