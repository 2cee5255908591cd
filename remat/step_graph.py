"""The step level, torch-free: plan the graphs of one training step together.

A step may be several graphs (Dynamo graph breaks, DDP buckets, FSDP2 blocks). Autograd runs
them as: forward of graph 0, ..., forward of graph K-1, then backward of graph K-1, ..., backward
of graph 0. `combine` lays the graphs out in exactly that order as one `RematGraph` (boundary
after the last forward), so any solver plans the whole step and one floor covers it; `split`
turns the step's plan back into one `Plan` per graph for the per-graph rewriter; `join` gives
the step schedule those per-graph plans really run, which the simulator scores.

    step = combine(graphs)
    plan = solve(step.graph, budget)
    plans = split(step, plan)                           # one per graph, each simulator-valid
    peak = simulate(step.graph, *join(step, plans)).peak  # what will run; check it, not plan's

`remat.step_solve.plan_step` does all of that, retries when `split` had to move
recomputations and the step ran over, and raises InfeasibleBudgetError stating the whole
step's floor.

What the combined graph assumes about the memory between the graphs (conservative: eager
code between graphs holds these values anyway), unless `links` (what run time showed,
remat.step_links) say otherwise:
- a graph's inputs stay inputs (free: what an earlier graph made is counted as its output);
- a graph's outputs stay outputs and live to the end of the step, so a forward output is
  counted until the end although the next graph may free it earlier (the caller's code may
  hold it), and an input gradient graph k+1 returns is counted as its output and again as
  graph k's late input;
- a graph's late inputs (output gradients) count from the step's boundary, not from when the
  later graph's backward makes them, until that graph's backward returns (always: it holds
  them until then, remat.step_links);
- `boundary_reserve` and `backward_reserve` are the largest of the graphs': they stand for the
  caller's loss and its seed gradient, held once per step between the last forward and the
  first backward, not once per graph; `carried` bytes come on top of `backward_reserve`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from remat.ir import Op, Plan, PlanStatus, RematGraph, Tensor
from remat.solvers._common import make_plan
from remat.step_links import StepLink, apply_links


@dataclass(frozen=True)
class StepGraph:
    """The graphs of one step as one RematGraph, with the maps between the two numberings."""

    graph: RematGraph
    """Forward of graph 0..K-1, then backward of graph K-1..0; boundary after the last forward."""
    graphs: tuple[RematGraph, ...]
    op_owner: tuple[tuple[int, int], ...]
    """Combined op id -> (graph index, op id in that graph)."""
    tensor_owner: tuple[tuple[int, int], ...]
    """Combined tensor id -> (graph index, tensor id in that graph)."""
    op_ids: tuple[tuple[int, ...], ...]
    """Per graph: its op id -> combined op id."""
    tensor_ids: tuple[tuple[int, ...], ...]
    """Per graph: its tensor id -> combined tensor id."""
    carried: int = 0
    """Bytes held outside the graphs from the step's boundary to its end (in backward_reserve)."""


def combine(
    graphs: Sequence[RematGraph], carried: int = 0, links: Sequence[StepLink] = ()
) -> StepGraph:
    """The step's graphs, in the order autograd runs them, as one RematGraph.

    `carried`: bytes the step holds outside its graphs from the first backward op to the end,
    e.g. gradients eager autograd makes for parameters no graph reads; conservatively counted
    from the boundary on (added to `backward_reserve`). `links`: what run time showed of the
    gradients between the graphs (see the module's doc); those that do not fit are ignored.
    """
    if not graphs:
        raise ValueError("a step needs at least one graph")
    if isinstance(carried, bool) or not isinstance(carried, int) or carried < 0:
        raise ValueError(f"carried must be an int number of bytes >= 0, got {carried!r}")
    prefixes = _prefixes(graphs)
    tensor_ids, tensor_owner = [], []
    for index, graph in enumerate(graphs):
        tensor_ids.append(tuple(range(len(tensor_owner), len(tensor_owner) + len(graph.tensors))))
        tensor_owner.extend((index, local) for local in range(len(graph.tensors)))
    op_owner = [(k, local) for k, g in enumerate(graphs) for local in range(g.boundary)]
    boundary = len(op_owner)
    for k in reversed(range(len(graphs))):
        op_owner.extend((k, local) for local in range(graphs[k].boundary, len(graphs[k].ops)))
    op_ids = [[0] * len(graph.ops) for graph in graphs]
    for combined, (k, local) in enumerate(op_owner):
        op_ids[k][local] = combined

    linked = apply_links(graphs, tensor_ids, op_ids, links)
    reads = linked.reads

    def tensors_of(k: int, local: Sequence[int]) -> tuple[int, ...]:
        return tuple(tensor_ids[k][t] for t in local)

    def held_to_end(outputs_of: Callable[[RematGraph], Sequence[int]]) -> tuple[int, ...]:
        """The graphs' outputs the links left held to the step's end, as the ops read them."""
        kept = (
            reads[k][t]
            for k, g in enumerate(graphs)
            for t in outputs_of(g)
            if tensor_ids[k][t] not in linked.not_held_to_end
        )
        return tuple(dict.fromkeys(kept))

    ops = tuple(
        _renumbered_op(graphs[k].ops[local], combined, prefixes[k], reads[k])
        for combined, (k, local) in enumerate(op_owner)
    )
    ops = linked.applied(ops)
    tensors = tuple(
        _renumbered_tensor(
            graphs[k].tensors[local], tensor_ids[k], reads[k], op_ids[k], prefixes[k]
        )
        for k, local in tensor_owner
    )
    combined_graph = RematGraph(
        ops=ops,
        tensors=tensors,
        boundary=boundary,
        inputs=sum((tensors_of(k, g.inputs) for k, g in enumerate(graphs)), ()),
        late_inputs=tuple(
            t
            for k, g in enumerate(graphs)
            for t in tensors_of(k, g.late_inputs)
            if t not in linked.relinked_late
        ),
        outputs=held_to_end(lambda g: g.outputs),
        forward_outputs=held_to_end(lambda g: g.forward_outputs),
        boundary_reserve=max(g.boundary_reserve for g in graphs),
        backward_reserve=max(g.backward_reserve for g in graphs) + carried,
        name="step(" + ",".join(prefixes) + ")",
    )
    return StepGraph(
        graph=combined_graph,
        graphs=tuple(graphs),
        op_owner=tuple(op_owner),
        tensor_owner=tuple(tensor_owner),
        op_ids=tuple(tuple(ids) for ids in op_ids),
        tensor_ids=tuple(tensor_ids),
        carried=carried,
    )


def _prefixes(graphs: Sequence[RematGraph]) -> list[str]:
    """Each graph's name, or name and index where names repeat (combined names stay unique)."""
    names = [graph.name for graph in graphs]
    if len(set(names)) == len(names):
        return names
    return [f"{name}#{index}" for index, name in enumerate(names)]


def _renumbered_op(op: Op, combined: int, prefix: str, tensor_ids: Sequence[int]) -> Op:
    return replace(
        op,
        id=combined,
        name=f"{prefix}/{op.name}",
        inputs=tuple(tensor_ids[t] for t in op.inputs),
        outputs=tuple(tensor_ids[t] for t in op.outputs),
    )


def _renumbered_tensor(
    tensor: Tensor,
    tensor_ids: Sequence[int],
    reads: Sequence[int],
    op_ids: Sequence[int],
    prefix: str,
) -> Tensor:
    """`tensor` in the step's numbering; a view of a linked late input views the gradient."""
    return replace(
        tensor,
        id=tensor_ids[tensor.id],
        name=f"{prefix}/{tensor.name}",
        producer=None if tensor.producer is None else op_ids[tensor.producer],
        alias_of=None if tensor.alias_of is None else reads[tensor.alias_of],
    )


def split(step: StepGraph, plan: Plan) -> tuple[Plan, ...]:
    """One Plan per graph from a plan of `step.graph`, each valid for the simulator on its own.

    Graph k's forward is its ops as they appear in the step's forward part (recomputations
    included), its backward its ops as they appear in the step's backward part. Each graph's
    ops keep their relative order, so a valid step plan gives valid per-graph plans.

    A graph's ops can only run inside its own forward or backward, so an execution the step's
    plan placed among another graph's ops moves: a recomputation of graph k's op placed inside
    a later graph's backward (which autograd runs before graph k's) runs at the start of graph
    k's backward instead; one placed after graph k's backward, at its end; in the forward part
    likewise (forwards run in graph order). Plans then say what moved, and all are marked
    HEURISTIC: the solver's status was for a step that no longer runs.
    `join` gives the step the plans run: its simulated peak, not `plan`'s, is the step's peak.
    """
    local = _local_schedules(step, plan.schedule, plan.boundary)
    moved = _moved(step, plan.schedule, plan.boundary)
    # The solver's status is about the step it planned, which no longer runs once one moved.
    status = PlanStatus.HEURISTIC if any(moved) else plan.status
    plans = []
    for k, (graph, (schedule, boundary)) in enumerate(zip(step.graphs, local)):
        notes = [*plan.notes, f"step: planned with the step's {len(step.graphs)} graphs together"]
        if moved[k]:
            names = sorted({graph.ops[op].name for op in moved[k]})
            notes.append(
                f"step: {len(moved[k])} execution(s) moved into this graph's own "
                f"forward or backward: {', '.join(names[:5])}"
            )
        plans.append(
            make_plan(
                graph,
                schedule,
                boundary,
                solver=plan.solver,
                status=status,
                budget=plan.budget,
                notes=notes,
            )
        )
    return tuple(plans)


def join(step: StepGraph, plans: Sequence[Plan]) -> tuple[tuple[int, ...], int]:
    """The step schedule (combined op ids) and its boundary that per-graph `plans` run as a
    step: forwards in graph order, then backwards in reverse graph order, as autograd runs."""
    if len(plans) != len(step.graphs):
        raise ValueError(f"{len(plans)} plans for a step of {len(step.graphs)} graphs")
    return _join(step, [(plan.schedule, plan.boundary) for plan in plans])


def moved_executions(step: StepGraph, plan: Plan) -> tuple[tuple[int, ...], ...]:
    """Per graph: the op ids (its own) of the executions `split` moves, in schedule order."""
    return _moved(step, plan.schedule, plan.boundary)


_Local = tuple[tuple[int, ...], int]
"""One graph's schedule (its own op ids) and boundary."""


def _local_schedules(step: StepGraph, schedule: Sequence[int], boundary: int) -> list[_Local]:
    count = len(step.graphs)
    forward: list[list[int]] = [[] for _ in range(count)]
    backward: list[list[int]] = [[] for _ in range(count)]
    for position, combined in enumerate(schedule):
        k, local = step.op_owner[combined]
        (forward if position < boundary else backward)[k].append(local)
    return [((*f, *b), len(f)) for f, b in zip(forward, backward)]


def _join(step: StepGraph, local: Sequence[_Local]) -> tuple[tuple[int, ...], int]:
    forward = [step.op_ids[k][op] for k, (ops, cut) in enumerate(local) for op in ops[:cut]]
    backward = [
        step.op_ids[k][op] for k in reversed(range(len(local))) for op in local[k][0][local[k][1] :]
    ]
    return (*forward, *backward), len(forward)


def _moved(step: StepGraph, schedule: Sequence[int], boundary: int) -> tuple[tuple[int, ...], ...]:
    """Per graph, its op ids whose executions `split` moves relative to other graphs.

    A graph's anchors in a part (forward or backward) are the first executions of its ops
    there. An execution of graph k's op stays in place when every other graph's anchors in its
    part lie on the side the step runs that graph (forward: graphs before k; backward: graphs
    after k, whose backward autograd runs first); otherwise it moves.
    """
    count = len(step.graphs)
    first: set[int] = set()
    anchors: list[list[int]] = [[] for _ in range(2 * count)]
    for position, combined in enumerate(schedule):
        if combined not in first:
            first.add(combined)
            k = step.op_owner[combined][0]
            anchors[2 * k + (position >= boundary)].append(position)
    moved: list[list[int]] = [[] for _ in range(count)]
    for position, combined in enumerate(schedule):
        k, local = step.op_owner[combined]
        backward = position >= boundary
        for j in range(count):
            spots = anchors[2 * j + backward]
            if j == k or not spots:
                continue
            runs_before = (j > k) if backward else (j < k)
            if (runs_before and spots[-1] > position) or (not runs_before and spots[0] < position):
                moved[k].append(local)
                break
    return tuple(tuple(ops) for ops in moved)
