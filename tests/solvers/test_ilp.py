"""`ilp`: exact answers on chains, brute force on tiny graphs, budgets, config, progress."""

from __future__ import annotations

import itertools

import pytest
from factories import GraphBuilder, chain, random_training_graph

from remat.budget import InfeasibleBudgetError
from remat.ir import PlanStatus, RematGraph
from remat.simulate import InvalidScheduleError, simulate
from remat.solvers import find_floor, keep_all_plan, solve
from remat.solvers.cpsat import run_cpsat
from remat.solvers.ilp import IlpConfig
from remat.solvers.ilp_model import RetentionModel
from remat.solvers.ilp_problem import build_problem
from remat.solvers.lazy import schedule_from_kept, structure

EXACT = {"workers": 1, "time_limit": 20.0}


def test_chain_at_four_activations_recomputes_three_forward_ops() -> None:
    plan = solve(chain(6), 400, "ilp", **EXACT)
    assert plan.status is PlanStatus.OPTIMAL
    assert plan.recompute_time == 3.0
    assert plan.lower_bound == 3.0
    assert plan.predicted_peak == 400
    # f3's output is recomputed for g4, f0's and f1's for g1 and g2: one of two optimal orders
    assert plan.schedule[: plan.boundary] == (0, 1, 2, 3, 4, 5)
    assert sorted(plan.schedule[plan.boundary :]) == [0, 1, 3, 6, 7, 8, 9, 10, 11]
    assert plan.schedule[plan.boundary :][:3] == (6, 3, 7)


def test_loose_budget_recomputes_nothing() -> None:
    graph = chain(6)
    plan = solve(graph, 10**9, "ilp", **EXACT)
    assert plan.schedule == keep_all_plan(graph).schedule
    assert plan.status is PlanStatus.OPTIMAL and plan.gap == 0.0


def _model_space_optimum(graph: RematGraph, budget: int) -> float | None:
    """Brute force over every schedule the model (2 executions per op) can express."""
    problem = build_problem(graph, 2, recompute_backward=False)
    options = [
        [None, *range(problem.lo[p], problem.hi[p] + 1)] if problem.copies[p] > 1 else [None]
        for p in range(len(graph.ops))
    ]
    best = None
    for stages in itertools.product(*options):
        events = [(p, p) for p in range(len(graph.ops))]
        events += [(stage, p) for p, stage in enumerate(stages) if stage is not None]
        events.sort()
        schedule = tuple(p for _, p in events)
        boundary = sum(1 for stage, _ in events if stage < graph.boundary)
        try:
            result = simulate(graph, schedule, boundary)
        except InvalidScheduleError:
            continue
        if result.peak <= budget and (best is None or result.recompute_time < best):
            best = result.recompute_time
    return best


def _lazy_optimum(graph: RematGraph, budget: int) -> float | None:
    """Brute force over every kept set of the lazy schedule."""
    saved = structure(graph).saved
    best = None
    for size in range(len(saved) + 1):
        for kept in itertools.combinations(saved, size):
            result = simulate(graph, *schedule_from_kept(graph, set(kept)))
            if result.peak <= budget and (best is None or result.recompute_time < best):
                best = result.recompute_time
    return best


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_ilp_matches_brute_force_over_the_model_and_beats_lazy(seed: int) -> None:
    graph = random_training_graph(seed, forward_ops=3)
    assert len(graph.ops) <= 12
    peak = keep_all_plan(graph).predicted_peak
    for fraction in (0.9, 0.75, 0.6):
        budget = int(peak * fraction)
        exact = _model_space_optimum(graph, budget)
        lazy = _lazy_optimum(graph, budget)
        try:
            plan = solve(graph, budget, "ilp", **EXACT)
        except InfeasibleBudgetError:
            assert exact is None and lazy is None
            continue
        assert plan.predicted_peak <= budget
        if lazy is not None:
            assert plan.recompute_time <= lazy + 1e-9
        if exact is not None:
            assert plan.recompute_time <= exact + 1e-9
            if plan.status is PlanStatus.OPTIMAL and plan.recompute_time < exact - 1e-9:
                pytest.fail("an optimal plan cheaper than the model allows: outside the model")


def test_infeasible_budget_raises_with_the_floor_in_bytes_and_units() -> None:
    graph = chain(6)
    with pytest.raises(InfeasibleBudgetError) as caught:
        solve(graph, 150, "ilp", **EXACT)
    error = caught.value
    assert error.floor > 150
    assert f"pass budget >= {error.floor}" in str(error)
    assert "B" in str(error)
    solve(graph, error.floor, "ilp", **EXACT)  # the floor itself is feasible


def test_views_keep_their_base_and_plans_validate() -> None:
    builder = GraphBuilder()
    x = builder.input("x")
    a = builder.op("a", [x], 100)
    v = builder.op("view", [a], 0, 0.0, view_of=a)
    b = builder.op("b", [v], 100)
    c = builder.op("c", [b], 100)
    builder.start_backward()
    grad = builder.input("dc", 10, late=True)
    g1 = builder.op("gc", [grad, b], 10)
    g2 = builder.op("gb", [g1, v], 10)
    g3 = builder.op("ga", [g2, x], 10)
    graph = builder.build(outputs=[c, g3], forward_outputs=[c])
    keep_all = keep_all_plan(graph).predicted_peak
    for budget in range(keep_all, 0, -20):
        try:
            plan = solve(graph, budget, "ilp", **EXACT)
        except InfeasibleBudgetError:
            break
        assert simulate(graph, plan.schedule, plan.boundary).peak <= budget


def test_transient_bytes_and_boundary_reserve_count() -> None:
    builder = GraphBuilder()
    x = builder.input("x")
    a = builder.op("a", [x], 100, transient=50)
    builder.op("b", [x], 100)
    builder.start_backward()
    grad = builder.input("db", 10, late=True)
    g = builder.op("gb", [grad, a], 10)
    graph = builder.build(outputs=[g], reserve=60)
    # keep-all: step b holds a + b = 200; the boundary a + db + reserve = 170
    assert keep_all_plan(graph).predicted_peak == 200
    plan = solve(graph, 170, "ilp", **EXACT)
    # a is recomputed in the backward: 100 + its 50 transient bytes + db = 160
    assert plan.schedule == (0, 1, 0, 2)
    assert plan.predicted_peak == 160
    with pytest.raises(InfeasibleBudgetError, match="pass budget >= 160"):
        solve(graph, 159, "ilp", **EXACT)


def test_progress_receives_status_lines() -> None:
    graph = random_training_graph(7, forward_ops=10)
    budget = (keep_all_plan(graph).predicted_peak + find_floor(graph).bytes) // 2
    lines: list[str] = []
    solve(graph, budget, "ilp", progress=lines.append, **EXACT)
    assert any(line.startswith("heuristics:") for line in lines)
    assert any(line.startswith("relaxation:") for line in lines)
    assert any(line.startswith("cp-sat cost:") for line in lines)


def test_a_relaxation_bound_reached_by_a_heuristic_skips_cp_sat() -> None:
    lines: list[str] = []
    plan = solve(chain(6), 400, "ilp", progress=lines.append, **EXACT)
    assert plan.status is PlanStatus.OPTIMAL and plan.lower_bound == plan.recompute_time == 3.0
    assert not any(line.startswith("cp-sat") for line in lines)


def test_same_input_gives_the_same_plan() -> None:
    graph = random_training_graph(7, forward_ops=10)
    budget = (keep_all_plan(graph).predicted_peak + find_floor(graph).bytes) // 2
    first = solve(graph, budget, "ilp", **EXACT)
    second = solve(graph, budget, "ilp", **EXACT)
    assert first.schedule == second.schedule


def test_lower_budgets_never_get_higher_peaks() -> None:
    graph = random_training_graph(11, forward_ops=10)
    top = keep_all_plan(graph).predicted_peak
    peaks = []
    for budget in range(top, 0, -max(1, top // 25)):
        try:
            peaks.append(solve(graph, budget, "ilp", **EXACT).predicted_peak)
        except InfeasibleBudgetError:
            break
    assert len(peaks) > 5
    assert peaks == sorted(peaks, reverse=True)


def test_auto_is_ilp_with_a_short_time_limit() -> None:
    plan = solve(chain(6), 400)
    assert plan.solver == "auto" and plan.recompute_time == 3.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("time_limit", 0, "time_limit must be > 0"),
        ("workers", 0, "workers must be >= 1"),
        ("copies", 0, "copies must be >= 1"),
        ("retries", -1, "retries must be >= 0"),
    ],
)
def test_config_is_validated_with_a_fix(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IlpConfig(**{field: value})


def test_unknown_solver_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="choose one of .*ilp.*sqrt"):
        solve(chain(3), 100, "magic")


def test_local_copies_below_copies_is_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="local_copies must be None or >= copies"):
        IlpConfig(copies=3, local_copies=2)


def test_local_search_may_run_ops_more_often_than_the_model() -> None:
    """local_copies above copies: the plan may run an op more often than the CP-SAT model
    allows, and it is still simulated within the budget."""
    graph = chain(12)
    budget = keep_all_plan(graph).predicted_peak * 2 // 5
    plan = solve(graph, budget, "ilp", time_limit=5.0, copies=2, local_copies=4)
    assert simulate(graph, plan.schedule, plan.boundary).peak <= budget
    assert plan.lower_bound is None or plan.lower_bound <= plan.recompute_time


def test_model_holds_a_returned_views_storage_to_the_end() -> None:
    """A forward output that is a view (HF's logits) holds its base's bytes to the end of the
    step: the model must count them there, or its schedules overshoot in the simulator."""
    builder = GraphBuilder()
    x = builder.input("x")
    hidden = builder.op("hidden", [x], 100)
    scores = builder.op("scores", [hidden], 400)
    logits = builder.op("logits", [scores], 0, 0.0, view_of=scores)
    loss = builder.op("log_softmax", [logits], 400)
    builder.start_backward()
    grad = builder.input("dloss", 10, late=True)
    g1 = builder.op("g_loss", [grad, loss], 400)
    g2 = builder.op("g_hidden", [g1, hidden], 100)
    graph = builder.build(outputs=[logits, g2], forward_outputs=[logits])
    problem = build_problem(graph, 2, False)
    assert graph.storage_of(logits) in problem.end_reads
    keep_all = keep_all_plan(graph).predicted_peak
    for budget in range(keep_all, 0, -50):
        model = RetentionModel(problem, problem.capacity(budget))
        run = run_cpsat(model, IlpConfig(workers=1), 5.0, None, lambda line: None)
        if run.schedule is None:
            break
        assert simulate(graph, run.schedule, run.boundary).peak <= budget
