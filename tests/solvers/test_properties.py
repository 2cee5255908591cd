"""Properties on random training graphs: every plan replays, fits, and ilp never loses to sqrt."""

from __future__ import annotations

import random

from factories import random_training_graph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, RematGraph
from remat.simulate import simulate
from remat.solvers import keep_all_plan, solve

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plan(graph: RematGraph, budget: int, solver: str, **config: object) -> Plan | None:
    try:
        plan = solve(graph, budget, solver, **config)
    except InfeasibleBudgetError as error:
        assert error.floor > budget
        assert f"{error.floor} bytes" in str(error)
        return None
    replay = simulate(graph, plan.schedule, plan.boundary)
    assert replay.peak == plan.predicted_peak <= budget
    assert replay.recompute_time == plan.recompute_time
    return plan


@SETTINGS
@given(
    rng=st.randoms(use_true_random=False),
    forward_ops=st.integers(2, 12),
    fraction=st.floats(0.3, 1.0),
)
def test_plans_replay_within_budget_and_ilp_beats_sqrt(
    rng: random.Random, forward_ops: int, fraction: float
) -> None:
    graph = random_training_graph(rng, forward_ops)
    budget = max(1, int(keep_all_plan(graph).predicted_peak * fraction))
    sqrt = _plan(graph, budget, "sqrt")
    lazy = _plan(graph, budget, "lazy")
    ilp = _plan(graph, budget, "ilp", workers=1, time_limit=10.0)
    for heuristic in (sqrt, lazy):
        if heuristic is not None:
            assert ilp is not None
            assert ilp.recompute_time <= heuristic.recompute_time + 1e-9
    if ilp is not None and ilp.lower_bound is not None:
        assert ilp.lower_bound <= ilp.recompute_time + 1e-9


@SETTINGS
@given(rng=st.randoms(use_true_random=False), forward_ops=st.integers(2, 10))
def test_keep_all_budget_needs_no_recompute(rng: random.Random, forward_ops: int) -> None:
    graph = random_training_graph(rng, forward_ops)
    peak = keep_all_plan(graph).predicted_peak
    plan = _plan(graph, peak, "ilp", workers=1, time_limit=10.0)
    assert plan is not None and plan.recompute_time == 0.0
