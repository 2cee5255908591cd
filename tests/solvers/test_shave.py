"""Structured plans shaved to a budget they just miss (remat.solvers.shave)."""

from __future__ import annotations

import math

from test_structured import labelled, layered

from remat.simulate import simulate
from remat.solvers.lazy import schedule_from_kept
from remat.solvers.shave import shaved_plans


def test_a_per_block_plan_just_over_the_budget_is_shaved_until_it_fits() -> None:
    graph, _ = layered()
    per_block = simulate(graph, *schedule_from_kept(graph, labelled(graph)["per-block: layers"]))
    assert per_block.peak == 1110
    plans = shaved_plans(graph, 1100, math.inf)
    assert plans and all("shaved" in plan.notes[0] for plan in plans)
    for plan in plans:
        checked = simulate(graph, plan.schedule, plan.boundary)
        assert checked.peak <= 1100 and checked.peak == plan.predicted_peak
        # one more recomputation than per-block, not a plan from scratch
        assert per_block.recompute_time < checked.recompute_time <= 2 * per_block.recompute_time


def test_kept_sets_that_fit_or_are_far_above_the_budget_are_left_alone() -> None:
    graph, _ = layered()
    assert not any("per-block" in p.notes[0] for p in shaved_plans(graph, 1110, math.inf))
    assert shaved_plans(graph, 500, math.inf) == []
