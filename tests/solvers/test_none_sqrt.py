"""`none` and `sqrt`: keep-all, and evenly spaced checkpoints swept under a budget."""

from __future__ import annotations

import pytest
from factories import GraphBuilder, chain

from remat.budget import InfeasibleBudgetError
from remat.ir import PlanStatus
from remat.solvers import keep_all_plan, solve
from remat.solvers.sqrt import SqrtConfig, cut_points, segment_schedule


def test_none_keeps_everything_and_is_optimal() -> None:
    graph = chain(5)
    plan = solve(graph, 10**6, "none")
    assert plan.schedule == tuple(range(10))
    assert plan.recompute_time == 0.0
    assert plan.status is PlanStatus.OPTIMAL
    assert plan.predicted_peak == keep_all_plan(graph).predicted_peak == 600


def test_none_below_the_keep_all_peak_raises_with_the_peak() -> None:
    with pytest.raises(InfeasibleBudgetError, match="pass budget >= 600"):
        solve(chain(5), 599, "none")


def test_cut_points_of_a_chain_are_all_but_the_last_forward_op() -> None:
    assert cut_points(chain(5)) == (0, 1, 2, 3)


def test_cut_points_skip_ops_inside_a_residual_block() -> None:
    builder = GraphBuilder()
    x = builder.input("x")
    h = builder.op("h", [x], 10)  # 0: cut
    a = builder.op("a", [h], 10)  # 1: h still needed by the add
    b = builder.op("b", [a], 10)  # 2: h still needed
    r = builder.op("add", [h, b], 10)  # 3: cut
    builder.op("out", [r], 10)  # 4
    assert cut_points(builder.build()) == (0, 3)


def test_two_segments_keep_the_middle_checkpoint() -> None:
    graph = chain(5)
    schedule, boundary = segment_schedule(graph, cut_points(graph), 2)
    # cuts f0..f3; 2 segments keep f1's output (tensor 2); g4 first needs f3's output
    assert schedule[:boundary] == (0, 1, 2, 3, 4)
    assert schedule[boundary:] == (2, 3, 5, 6, 7, 0, 8, 9)


def test_sqrt_picks_the_cheapest_segmentation_that_fits() -> None:
    graph = chain(8)
    loose = solve(graph, 10**6, "sqrt")
    assert loose.recompute_time <= 1.0
    tight = solve(graph, 600, "sqrt")
    assert tight.predicted_peak <= 600
    assert tight.recompute_time >= loose.recompute_time


def test_sqrt_infeasible_budget_states_its_floor() -> None:
    with pytest.raises(InfeasibleBudgetError, match="bytes"):
        solve(chain(8), 100, "sqrt")


def test_sqrt_config_is_validated() -> None:
    with pytest.raises(ValueError, match="segments must be >= 1"):
        SqrtConfig(segments=0)
    with pytest.raises(TypeError):
        SqrtConfig(3)  # type: ignore[misc]  # keyword-only
