"""remat.joint_plan: a step that ran as several graphs, re-planned whole, torch-free."""

from __future__ import annotations

from dataclasses import replace

import pytest
from solvers.factories import chain

from remat.budget import Budget, InfeasibleBudgetError
from remat.ir import RematGraph
from remat.joint_plan import (
    keep_all_step_peak,
    plan_jointly,
    resolve_step_budget,
    same_structure,
)
from remat.simulate import simulate
from remat.solvers import keep_all_plan, solve
from remat.step_graph import combine, join

SOLVER = {"workers": 1}


def two_chains(length: int = 4) -> list[RematGraph]:
    return [replace(chain(length), name="a"), replace(chain(length), name="b")]


def test_keep_all_step_peak_is_the_combined_steps_and_a_fraction_resolves_against_it() -> None:
    graphs = two_chains()
    peak = keep_all_step_peak(graphs)
    step = combine(graphs)
    assert peak == simulate(step.graph, *join(step, [keep_all_plan(g) for g in graphs])).peak
    # more than either graph alone: a's saved activations are held through b's backward
    assert peak > max(keep_all_plan(g).predicted_peak for g in graphs)
    assert keep_all_step_peak(graphs, carried=50) == peak + 50
    assert resolve_step_budget(Budget(fraction=0.5), graphs) == peak // 2
    assert resolve_step_budget(Budget(bytes=123), graphs) == 123


def test_plans_that_ran_over_budget_are_replaced_by_joint_ones_that_fit() -> None:
    graphs = two_chains()
    budget = 500
    # a keeps everything (300 bytes) and leaves b 200 bytes, under b's floor: b runs its floor
    first = solve(graphs[0], budget, **SOLVER)
    floor_b = solve(graphs[1], 10_000, **SOLVER)
    ran = [first, keep_all_plan(graphs[1])]
    joint = plan_jointly(graphs, ran, budget, **SOLVER)
    assert joint.ran_over_budget and joint.worth_recompiling
    assert joint.ran_peak > budget >= joint.peak
    assert joint.ran_forward_peak <= joint.ran_peak
    assert joint.keep_all_peak == keep_all_step_peak(graphs)
    assert len(joint.plans) == 2 and floor_b is not None
    step = joint.result.step
    assert joint.peak == simulate(step.graph, *join(step, joint.plans)).peak


def test_joint_plans_that_only_match_what_ran_are_not_worth_a_recompile() -> None:
    graphs = two_chains()
    ran = [keep_all_plan(g) for g in graphs]
    joint = plan_jointly(graphs, ran, keep_all_step_peak(graphs), **SOLVER)
    assert not joint.ran_over_budget
    assert joint.ran_recompute_time == 0.0
    assert not joint.worth_recompiling


def test_a_cheaper_joint_plan_is_worth_a_recompile() -> None:
    """Plans that fit but recompute more than needed (each graph planned at its own floor, as a
    first call under a tight budget might): at a budget where keep-all fits, switch."""
    graphs = two_chains(6)
    ran = [solve(g, solve(g, 10**6, **SOLVER).predicted_peak // 2, **SOLVER) for g in graphs]
    assert all(plan.recompute_time > 0 for plan in ran)
    budget = keep_all_step_peak(graphs)
    joint = plan_jointly(graphs, ran, budget, **SOLVER)
    assert not joint.ran_over_budget
    assert joint.ran_recompute_time > 0 == joint.result.simulation.recompute_time
    assert joint.worth_recompiling


def test_below_the_steps_floor_the_joint_planner_names_the_floor() -> None:
    graphs = two_chains()
    ran = [keep_all_plan(g) for g in graphs]
    with pytest.raises(InfeasibleBudgetError, match="pass budget >= 500"):
        plan_jointly(graphs, ran, 499, **SOLVER)


def test_plans_and_graphs_must_pair_up() -> None:
    graphs = two_chains()
    with pytest.raises(ValueError, match="1 plans ran for a step of 2 graphs"):
        plan_jointly(graphs, [keep_all_plan(graphs[0])], 1000)


def test_same_structure_ignores_prices_but_not_shapes() -> None:
    a = chain(3)
    slower = replace(a, ops=tuple(replace(op, time=op.time * 2) for op in a.ops))
    assert same_structure(a, slower)
    assert same_structure(a, replace(a, name="renamed"))
    assert not same_structure(a, chain(4))
    assert not same_structure(a, chain(3, size=200))
    assert not same_structure(a, replace(a, boundary=a.boundary - 1))
