"""Splitting, eviction, local search, the relaxation bound and the floor."""

from __future__ import annotations

import math
import random

import pytest
from factories import GraphBuilder, chain, random_training_graph
from hypothesis import given, settings
from hypothesis import strategies as st

from remat.ir import RematGraph
from remat.simulate import simulate
from remat.solvers import find_floor, keep_all_plan, solve
from remat.solvers.bound import lower_bound, relaxation, solve_relaxation
from remat.solvers.evict import eviction_schedule
from remat.solvers.local import improve
from remat.solvers.split import (
    _candidates,
    _without_repeats,
    canonical,
    direct_from_gaps,
    prune,
    repaired_plan,
    split_schedule,
)


def test_split_brings_a_chain_under_budget_in_canonical_order() -> None:
    graph = chain(6)
    found = split_schedule(graph, 500)
    assert found is not None
    result = simulate(graph, *found)
    assert result.peak <= 500 and result.recompute_time > 0
    assert canonical(graph, found[0]) == found


def test_split_reports_when_it_is_stuck() -> None:
    assert split_schedule(chain(6), 50) is None  # a backward step alone needs more


def test_eviction_walk_fits_its_budget() -> None:
    graph = chain(8)
    found = eviction_schedule(graph, 500)
    assert found is not None and simulate(graph, *found).peak <= 500
    assert eviction_schedule(graph, 100) is None


def test_local_search_never_returns_a_worse_plan() -> None:
    graph = random_training_graph(5, forward_ops=12)
    peak = keep_all_plan(graph).predicted_peak
    budget = (peak + find_floor(graph).bytes) // 2
    start = split_schedule(graph, budget)
    if start is None:
        pytest.skip("the walk is stuck on this graph")
    before = simulate(graph, *start).recompute_time
    found = improve(graph, budget, start, copies=2, deadline=math.inf, seed=1)
    after = simulate(graph, *found)
    assert after.peak <= budget and after.recompute_time <= before


def test_relaxation_is_tight_on_a_chain() -> None:
    assert lower_bound(chain(6), 400) == 3.0  # what the ILP proves optimal


def test_relaxation_floor_is_a_step_that_alone_needs_the_bytes() -> None:
    graph = chain(6)
    relaxed = relaxation(graph)
    assert relaxed.floor_units() * relaxed.problem.mem_unit == 300  # g_i: grad, input, output
    assert lower_bound(graph, 299) is None
    floor = find_floor(graph, walk=True)
    assert floor.bytes == 300 and floor.proven
    assert simulate(graph, floor.plan.schedule, floor.plan.boundary).peak == 300


def test_floor_walk_asks_below_the_lower_bound(monkeypatch) -> None:
    """Asked for less than the floor, the eviction walk evicts harder and may peak lower than
    when asked for the floor itself (HF GPT-NeoX tiny did), so it is asked below the bound."""
    from remat.solvers import floor as floor_module

    asked: list[int] = []
    walk = floor_module.eviction_schedule

    def recording(graph, budget, **options):
        asked.append(budget)
        return walk(graph, budget, **options)

    monkeypatch.setattr(floor_module, "eviction_schedule", recording)
    graph = chain(8)
    relaxed = relaxation(graph)
    known = relaxed.floor_units() * relaxed.problem.mem_unit
    floor = find_floor(graph, walk=True)
    assert min(asked) < known
    assert floor.bytes >= known


@settings(max_examples=20, deadline=None)
@given(rng=st.randoms(use_true_random=False), forward_ops=st.integers(2, 8))
def test_relaxation_never_exceeds_an_optimal_plan(rng: random.Random, forward_ops: int) -> None:
    graph = random_training_graph(rng, forward_ops)
    floor = find_floor(graph).bytes
    budget = (keep_all_plan(graph).predicted_peak + floor) // 2
    plan = solve(graph, budget, "ilp", workers=1, time_limit=10.0)
    bound = lower_bound(graph, budget)
    assert bound is not None and bound <= plan.recompute_time + 1e-9


def _random_layer_graph(layers: int) -> tuple[RematGraph, list[int]]:
    """A dropout-like chain: each layer reads an RNG state (made by an op that may not run
    again), its output read by the next layer and by its backward op."""
    builder = GraphBuilder("rng-chain")
    value = builder.input("x")
    states, layer_ops = [], []
    for index in range(layers):
        state = builder.op(f"rng_state{index}", [], 50, time=0.0, recomputable=False)
        states.append(len(builder.ops) - 1)
        layer_ops.append((value, builder.op(f"drop{index}", [value, state], 100)))
        value = layer_ops[-1][1]
    loss = builder.op("loss", [value], 4)
    builder.start_backward()
    grad = builder.input("g", 4, late=True)
    for layer_input, output in reversed(layer_ops):
        grad = builder.op(f"b{output}", [grad, output, layer_input], 100, recomputable=False)
    return builder.build(outputs=(loss, grad), forward_outputs=(loss,)), states


def test_eviction_walk_never_reruns_an_rng_state() -> None:
    graph, states = _random_layer_graph(6)
    found_any = False
    for budget in range(keep_all_plan(graph).predicted_peak, 0, -50):
        for weight in (0.0, 0.5, 1.0):
            found = eviction_schedule(graph, budget, weight)
            if found is None:
                continue
            found_any = True
            assert all(found[0].count(op) == 1 for op in states), (budget, weight)
            assert simulate(graph, *found).peak <= budget
    assert found_any


def _chain_read_through_views(length: int) -> RematGraph:
    """HF Conv1D's shape: every activation is read, forward and backward, through a view."""
    builder = GraphBuilder("viewed-chain")
    x = builder.input("x")
    views = [x]
    for index in range(length):
        made = builder.op(f"f{index}", [views[-1]], 100)
        views.append(builder.op(f"v{index}", [made], 0, 0.0, view_of=made))
    builder.start_backward()
    grad = builder.input("grad", 10, late=True)
    for index in reversed(range(length)):
        grad = builder.op(f"g{index}", [grad, views[index + 1]], 10)
    return builder.build(outputs=[grad])


def test_split_remakes_the_views_a_recomputed_value_is_read_through() -> None:
    graph = _chain_read_through_views(6)
    budget = keep_all_plan(graph).predicted_peak - 200
    found = split_schedule(graph, budget)
    assert found is not None  # the old view would hold the old storage: no split would free it
    result = simulate(graph, *found)
    assert result.peak <= budget and result.recompute_time > 0


def test_plan_from_the_relaxation_reaches_its_bound_through_views() -> None:
    graph = _chain_read_through_views(6)
    budget = keep_all_plan(graph).predicted_peak - 200
    solved = solve_relaxation(graph, budget, time_limit=5.0)
    assert solved is not None
    hint = solved.solutions[0]
    assert hint.dropped
    start = direct_from_gaps(graph, hint.dropped, hint.remade)
    plan = repaired_plan(graph, budget, start, 2, math.inf)
    assert plan is not None
    assert simulate(graph, plan.schedule, plan.boundary).peak <= budget
    assert plan.recompute_time == pytest.approx(solved.bound)


def test_prune_drops_repeat_runs_together_and_keeps_the_budget() -> None:
    builder = GraphBuilder("repeats")
    x = builder.input("x")
    a = builder.op("a", [x], 10, 2.0)
    b = builder.op("b", [a], 10, 1.0)
    loss = builder.op("loss", [b], 1, 0.5)
    builder.start_backward()
    grad = builder.input("tangent", 1, late=True)
    g_b = builder.op("g_b", [grad, b], 10, 1.0)
    g_a = builder.op("g_a", [g_b, a], 10, 1.0)
    builder.op("g_x", [g_a, a], 10, 1.0)
    graph = builder.build(outputs=[loss], forward_outputs=[loss])
    # a made again before g_a and once more before g_x: the last run is a repeat.
    schedule = (0, 1, 2, 3, 0, 4, 0, 5)
    budget = simulate(graph, schedule, 3).peak
    pruned, boundary = prune(graph, budget, (schedule, 3), math.inf)
    assert simulate(graph, pruned, boundary).peak <= budget
    assert pruned.count(0) < schedule.count(0)
    # Below the peak of holding a, only the repeat may go, never the first remade run.
    held = simulate(graph, (0, 1, 2, 3, 0, 4, 5), 3).peak
    tight, _ = _without_repeats(graph, held, (schedule, 3), math.inf)
    assert tight == (0, 1, 2, 3, 0, 4, 5)


def test_a_stuck_repair_may_run_an_op_a_third_time() -> None:
    """A value made again for one backward read and held through a big one to the next: only
    a third run of its producer frees it there."""
    builder = GraphBuilder("third run")
    a = builder.op("a", [builder.input("x", 1)], 10)
    loss = builder.op("loss", [a], 1)
    builder.start_backward()
    g1 = builder.op("g1", [builder.input("tangent", 1, late=True), a], 1)
    small = builder.op("small", [builder.op("big", [g1], 30)], 1)
    g2 = builder.op("g2", [small, a], 1)
    graph = builder.build(outputs=[loss, g2], forward_outputs=[loss])
    start = ((0, 1, 0, 2, 3, 4, 5), 2)  # a made again before g1, held through big
    budget = simulate(graph, (0, 1, 0, 2, 3, 4, 0, 5), 2).peak
    assert simulate(graph, *start).peak > budget
    assert split_schedule(graph, budget, start, copies=2) is None
    plan = repaired_plan(graph, budget, start, copies=2, deadline=math.inf)
    assert plan is not None
    checked = simulate(graph, plan.schedule, plan.boundary)
    assert checked.peak == plan.predicted_peak <= budget
    assert plan.schedule.count(0) >= 2  # made again before g2, after big


def test_splitting_a_copy_of_a_view_frees_nothing_when_its_base_would_be_held() -> None:
    """The copy's producer reads a view: remaking the copy after the peak holds the view's
    base through it, as big as the copy, so the split is no candidate (HF GPT-2's key/value
    clones were tried first at every peak near the floor, 64 replays that freed nothing)."""
    builder = GraphBuilder("copy of a view")
    base = builder.op("base", [builder.input("x", 1)], 10)
    view = builder.op("view", [base], 0, 0.0, view_of=base)
    copy = builder.op("copy", [view], 10)
    loss = builder.op("loss", [copy], 1)
    builder.start_backward()
    big = builder.op("big", [builder.input("tangent", 1, late=True)], 30)
    grad = builder.op("grad", [big, copy], 1)
    graph = builder.build(outputs=[loss, grad], forward_outputs=[loss])
    schedule = tuple(range(len(graph.ops)))
    replay = simulate(graph, schedule, graph.boundary)
    assert schedule[replay.peak_step] == 4  # big, with the copy held
    assert _candidates(graph, schedule, graph.boundary, replay.peak_step) == []
