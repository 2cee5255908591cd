"""remat.step_graph: a step's graphs combined, planned together, split back per graph."""

from __future__ import annotations

from dataclasses import replace

import pytest
from solvers.factories import GraphBuilder, chain

import remat.step_graph as step_graph
import remat.step_solve as step_solve
from remat.budget import InfeasibleBudgetError
from remat.ir import PlanStatus, RematGraph
from remat.simulate import simulate
from remat.solvers import keep_all_plan, solve
from remat.solvers._common import make_plan
from remat.step_graph import combine, join, moved_executions, split
from remat.step_solve import plan_step

SOLVER = {"workers": 1}


def named(graph: RematGraph, name: str) -> RematGraph:
    return replace(graph, name=name)


def two_chains(length: int) -> list[RematGraph]:
    return [named(chain(length), "a"), named(chain(length), "b")]


def test_combine_runs_forwards_in_order_then_backwards_in_reverse() -> None:
    step = combine(two_chains(3))
    names = [op.name for op in step.graph.ops]
    assert names == [
        *["a/f0", "a/f1", "a/f2", "b/f0", "b/f1", "b/f2"],
        *["b/g2", "b/g1", "b/g0", "a/g2", "a/g1", "a/g0"],
    ]
    assert step.graph.boundary == 6
    assert step.op_owner[6] == (1, 3) and step.op_ids[0][3] == 9
    # chain(3)'s tensors: x, f0, f1, f2, tangent, g2, g1, g0; b's come after a's
    assert step.graph.inputs == (0, 8)
    assert step.graph.late_inputs == (4, 12)
    assert step.graph.outputs == (7, 15)
    assert step.tensor_owner[12] == (1, 4)
    assert step.graph.tensors[13].name == "b/g2" and step.graph.tensors[13].producer == 6
    assert sum(op.time for op in step.graph.ops) == 12.0
    # keep-all: b's backward peaks as alone (400) plus a's two saved activations and a's
    # output gradient, which the step counts from its boundary (conservative)
    assert keep_all_plan(step.graph).predicted_peak == 300 + 400


def test_combine_keeps_op_attributes_and_takes_the_largest_reserves() -> None:
    builder = GraphBuilder("a")
    x = builder.input("x")
    base = builder.op("base", [x], 40, 2.0, recomputable=False, transient=7)
    builder.op("view", [base], 0, 0.5, view_of=base)
    a = builder.build(outputs=[base], forward_outputs=[base], reserve=5, backward_reserve=3)
    b = replace(chain(2), name="b", boundary_reserve=9, backward_reserve=1)
    step = combine([a, b], carried=100)
    op = step.graph.ops[0]
    assert (op.name, op.time, op.flops, op.recomputable, op.transient_bytes) == (
        "a/base",
        2.0,
        2000,
        False,
        7,
    )
    view = step.graph.tensors[2]
    assert (view.name, view.bytes, view.alias_of, view.producer) == ("a/view", 0, 1, 1)
    assert step.graph.forward_outputs == (1,)
    assert step.graph.boundary_reserve == 9
    assert step.graph.backward_reserve == 3 + 100


def test_combine_makes_repeated_graph_names_unique() -> None:
    step = combine([chain(2), chain(2)])
    names = [op.name for op in step.graph.ops]
    assert len(set(names)) == len(names)
    assert names[0] == "chain2#0/f0"


def test_split_of_keep_all_gives_each_graph_its_keep_all_schedule() -> None:
    graphs = [named(chain(3), "a"), named(chain(5), "b")]
    step = combine(graphs)
    plans = split(step, keep_all_plan(step.graph))
    for graph, plan in zip(graphs, plans):
        keep_all = keep_all_plan(graph)
        assert (plan.schedule, plan.boundary) == (keep_all.schedule, keep_all.boundary)
        assert plan.predicted_peak == keep_all.predicted_peak
    assert join(step, plans) == (tuple(range(len(step.graph.ops))), step.graph.boundary)


def test_join_of_split_is_the_plan_when_nothing_moved() -> None:
    step = combine(two_chains(4))
    plan = solve(step.graph, 500, **SOLVER)
    assert plan.recompute_time > 0
    assert moved_executions(step, plan) == ((), ())
    plans = split(step, plan)
    assert join(step, plans) == (plan.schedule, plan.boundary)
    assert all(p.status is plan.status for p in plans)
    for graph, part in zip(step.graphs, plans):
        simulate(graph, part.schedule, part.boundary)  # valid on its own graph


def test_a_recomputation_inside_another_graphs_backward_moves_to_its_own() -> None:
    step = combine(two_chains(3))
    # ids: a/f0..f2 = 0..2, b/f0..f2 = 3..5, b/g2..g0 = 6..8, a/g2..g0 = 9..11.
    # a/f1 (1) is recomputed between b/g2 and b/g1: autograd runs it only in a's backward.
    schedule = (0, 1, 2, 3, 4, 5, 6, 1, 7, 8, 9, 10, 11)
    plan = make_plan(step.graph, schedule, 6, solver="hand", status=PlanStatus.OPTIMAL)
    assert plan.predicted_peak == 700
    assert moved_executions(step, plan) == ((1,), ())
    a, b = split(step, plan)
    assert (a.schedule, a.boundary) == ((0, 1, 2, 1, 3, 4, 5), 3)
    assert (b.schedule, b.boundary) == ((0, 1, 2, 3, 4, 5), 3)
    assert a.status is b.status is PlanStatus.HEURISTIC
    assert any("1 execution(s) moved" in note and "f1" in note for note in a.notes)
    joined, boundary = join(step, (a, b))
    assert (joined, boundary) == ((0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 9, 10, 11), 6)
    run = simulate(step.graph, joined, boundary)
    # Each graph's output gradient (100) is held until its backward returns (AOTAutograd's
    # argument tuple), not only until its first backward op read it.
    assert run.timeline == (100, 200, 300, 200, 300, 400, 600, 600, 500, 400, 500, 500, 400)
    assert run.peak == 600


def big_then_small() -> RematGraph:
    """A forward whose 1000-byte value is read only to make a 10-byte one the backward reads."""
    builder = GraphBuilder("a")
    x = builder.input("x")
    big = builder.op("big", [x], 1000)
    small = builder.op("small", [big], 10)
    builder.op("out", [small], 10)
    builder.start_backward()
    tangent = builder.input("tangent", 10, late=True)
    grad = builder.op("g", [tangent, small], 10)
    return builder.build(outputs=[grad])


def early_recompute_plan(step: step_graph.StepGraph):
    """Keeps `big` and remakes `small` at the start of b's backward, freeing `big` there; run
    per graph, `big` stays until a's backward (ids: a's 0..2, b/f0, b/f1, b/g1, b/g0, a/g)."""
    return make_plan(step.graph, (0, 1, 2, 3, 4, 1, 5, 6, 7), 5, solver="hand")


def test_a_moved_recomputation_that_raises_the_peak_is_retried_tighter(monkeypatch) -> None:
    graphs = [big_then_small(), named(chain(2), "b")]
    step = combine(graphs)
    hand = early_recompute_plan(step)
    assert hand.predicted_peak == 1220
    assert simulate(step.graph, *join(step, split(step, hand))).peak == 1310

    asked: list[int] = []

    def first_moves(graph: RematGraph, budget: int, solver: str = "auto", **config):
        asked.append(budget)
        return hand if len(asked) == 1 else solve(graph, budget, solver, **config)

    monkeypatch.setattr(step_solve, "solve", first_moves)
    result = plan_step(graphs, 1220, with_floor=False, **SOLVER)
    assert result.solved_budgets == (1220, 1220 - 90)
    assert result.peak == 1010 <= 1220
    assert result.floor is None


def test_when_retries_fail_the_floor_plan_runs_if_it_fits(monkeypatch) -> None:
    graphs = [big_then_small(), named(chain(2), "b")]
    hand = early_recompute_plan(combine(graphs))

    def only_the_hand_plan(graph: RematGraph, budget: int, solver: str = "auto", **config):
        if budget < hand.predicted_peak:
            raise InfeasibleBudgetError(budget, hand.predicted_peak)
        return hand

    monkeypatch.setattr(step_solve, "solve", only_the_hand_plan)
    result = plan_step(graphs, 1220)
    assert result.solved_budgets == (1220, 1130)
    assert result.peak == result.floor == 1010
    assert result.combined is not hand


def test_the_step_planned_whole_fits_where_greedy_per_graph_planning_fails() -> None:
    """The point of planning a step whole: graph a, planned first with the whole budget,
    keeps everything for its backward and leaves b less than b's floor; together they fit."""
    a, b = two_chains(4)
    budget = 500
    first = solve(a, budget, **SOLVER)
    kept = simulate(a, first.schedule, first.boundary).saved_bytes
    assert (first.recompute_time, kept) == (0.0, 300)
    with pytest.raises(InfeasibleBudgetError) as refused:
        solve(b, budget - kept, **SOLVER)
    assert refused.value.floor == 300 > budget - kept

    result = plan_step([a, b], budget, **SOLVER)
    assert result.peak <= budget
    assert result.peak == simulate(result.step.graph, *join(result.step, result.plans)).peak
    assert result.floor == 500  # a's output gradient held through a's backward
    for graph, plan in zip((a, b), result.plans):
        assert simulate(graph, plan.schedule, plan.boundary).peak == plan.predicted_peak


@pytest.mark.parametrize("budget", [1, 300, 499])
def test_the_step_floor_does_not_depend_on_the_budget(budget: int) -> None:
    with pytest.raises(InfeasibleBudgetError, match="pass budget >= 500") as refused:
        plan_step(two_chains(4), budget, **SOLVER)
    assert refused.value.floor == 500
    assert plan_step(two_chains(4), 500, **SOLVER).peak == 500


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="at least one graph"):
        combine([])
    with pytest.raises(ValueError, match="carried"):
        combine([chain(2)], carried=-1)
    with pytest.raises(TypeError, match="budget must be an int"):
        plan_step([chain(2)], 1.5)  # type: ignore[arg-type]
    step = combine(two_chains(2))
    with pytest.raises(ValueError, match="1 plans for a step of 2 graphs"):
        join(step, [keep_all_plan(step.graphs[0])])


def test_per_graph_checkpointing_is_a_candidate_of_every_step_plan(monkeypatch) -> None:
    """What per-block checkpointing runs (each graph keeps its inputs and recomputes its
    forward at the start of its backward) is taken when the solver's plan costs more, and
    the step's floor is never above it."""
    graphs = [named(chain(4), "a"), named(chain(4), "b")]
    structured = step_solve._checkpoint_each_graph(combine(graphs))
    budget = structured.simulation.peak

    def wasteful(graph: RematGraph, budget: int, solver: str = "auto", **config):
        # The structured plan with one more recomputation: b's first op runs twice in a row.
        plan = structured.combined
        at = plan.boundary
        schedule = (*plan.schedule[: at + 1], *plan.schedule[at:])
        return make_plan(graph, schedule, plan.boundary, solver="wasteful")

    monkeypatch.setattr(step_solve, "solve", wasteful)
    result = plan_step(graphs, budget)
    assert result.combined.solver == "checkpoint each graph"
    assert result.peak <= budget and result.floor <= structured.simulation.peak
    assert all(p.schedule.count(p.schedule[0]) == 2 for p in result.plans)
