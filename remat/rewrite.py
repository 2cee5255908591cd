"""Plan -> forward and backward GraphModules in AOTAutograd's calling convention.

The forward returns the step's outputs and the values saved for the backward; the backward takes
the saved values and the output gradients and returns the input gradients. Both bodies follow the
plan's schedule: a recomputed op is emitted again just before the use it serves, and fx frees
every value after its last use. The backward takes its arguments boxed so each saved value is
freed at its last use instead of at the end.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch._functorch.partitioners import _extract_fwd_bwd_modules
from torch._guards import detect_fake_mode

from remat.capture import CapturedGraph
from remat.ir import Plan
from remat.rng import RandomOp, ReplayRandomOp, capture_rng_state


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
    states, replay_targets = _add_rng_states(joint, replayed)

    saved = _saved_nodes(captured, forward_part, backward_part) + list(states.values())
    for node in saved:
        if node.name in captured.mutated_inputs:
            # Only a mutation-tolerant recomputation reads it (see capture); the forward's
            # in-place update of the buffer must not trip autograd's version check.
            node.meta["saved_tensor_with_no_vc_check"] = True
    forward_gm, backward_gm = _extract_fwd_bwd_modules(
        joint, saved, [], num_fwd_outputs=num_fwd_outputs
    )
    by_name = {node.name: node for node in joint.graph.nodes}

    forward_nodes = _with_getitems([op_nodes[i] for i in forward_part], states)
    backward_nodes = _with_getitems([op_nodes[i] for i in backward_part], {})
    new_forward = _rebuild(joint, forward_gm, forward_nodes, by_name, {}, boxed=False)
    new_backward = _rebuild(joint, backward_gm, backward_nodes, by_name, replay_targets, boxed=True)
    saved_names = tuple(
        n.name for n in backward_gm.graph.nodes if n.op == "placeholder" and "tangents" not in n.name
    )
    return RewrittenStep(new_forward, new_backward, saved_names, tuple(n.name for n in states))


def _saved_nodes(
    captured: CapturedGraph, forward_part: list[int], backward_part: list[int]
) -> list[fx.Node]:
    """Tensors the backward part reads from the forward part (or from graph inputs)."""
    graph = captured.graph
    produced_in_backward: set[int] = set()
    saved: dict[int, None] = {}
    late = set(graph.late_inputs)
    for op_id in backward_part:
        op = graph.ops[op_id]
        for tensor in op.inputs:
            if tensor not in produced_in_backward and tensor not in late:
                saved[tensor] = None
        produced_in_backward.update(op.outputs)
    return [captured.tensor_nodes[t] for t in saved]


def _add_rng_states(
    joint: fx.GraphModule, random_nodes: list[fx.Node]
) -> tuple[dict[fx.Node, fx.Node], dict[fx.Node, ReplayRandomOp]]:
    """Before each random op that is recomputed, capture the generator state it will draw from."""
    states: dict[fx.Node, fx.Node] = {}
    replays: dict[fx.Node, ReplayRandomOp] = {}
    if not random_nodes:
        return states, replays
    fake_mode = detect_fake_mode([n.meta.get("val") for n in joint.graph.nodes])
    for node in random_nodes:
        value = node.meta["val"]
        device = str((value[0] if isinstance(value, (tuple, list)) else value).device)
        with joint.graph.inserting_before(node):
            state = joint.graph.call_function(capture_rng_state, (device,))
        example = capture_rng_state(device)
        if fake_mode is not None:
            with fake_mode:
                example = torch.empty(example.shape, dtype=example.dtype, device=example.device)
        state.meta["val"] = example
        replays[node] = ReplayRandomOp(node.target, device)
        node.target = RandomOp(node.target)
        node.args = (state, *node.args)
        states[node] = state
    return states, replays


def _with_getitems(nodes: list[fx.Node], states: dict[fx.Node, fx.Node]) -> list[fx.Node]:
    """Each op followed by the getitems that project its outputs; RNG states before their op."""
    sequence: list[fx.Node] = []
    for node in nodes:
        if node in states and states[node] not in sequence:
            sequence.append(states[node])
        sequence.append(node)
        sequence.extend(u for u in node.users if u.target is operator.getitem)
    return sequence


def _rebuild(
    joint: fx.GraphModule,
    extracted: fx.GraphModule,
    sequence: list[fx.Node],
    by_name: dict[str, fx.Node],
    replay_targets: dict[fx.Node, ReplayRandomOp],
    *,
    boxed: bool,
) -> fx.GraphModule:
    """`extracted`'s placeholders and outputs around a body that runs `sequence` in order."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for placeholder in extracted.graph.find_nodes(op="placeholder"):
        new = graph.placeholder(placeholder.name)
        new.meta = placeholder.meta
        env[by_name[placeholder.name]] = new
    for node in sequence:
        copy = graph.node_copy(node, lambda arg: env[arg])
        if node in replay_targets:
            # Runs in the backward repeat a forward random op: replay its generator state.
            copy.target = replay_targets[node]
        env[node] = copy
    old_output = next(iter(extracted.graph.find_nodes(op="output")))
    values = tuple(
        env[by_name[v.name]] if isinstance(v, fx.Node) else v for v in old_output.args[0]
    )
    output = graph.output(values)
    output.meta = dict(old_output.meta)
    if boxed:
        graph.set_codegen(fx.graph._BoxedCodeGen())
    graph.lint()
    return fx.GraphModule(joint, graph)
