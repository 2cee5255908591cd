"""The lazy schedule: exact schedules on chains, forced values, multiple recomputation."""

from __future__ import annotations

import pytest
from factories import GraphBuilder, chain

from remat.budget import InfeasibleBudgetError
from remat.simulate import simulate
from remat.solvers import solve
from remat.solvers.lazy import schedule_from_kept, structure, sweep_counts


def test_keeping_everything_is_the_reference_order() -> None:
    graph = chain(4)
    kept = set(structure(graph).saved)
    assert schedule_from_kept(graph, kept) == (tuple(range(8)), 4)


def test_dropping_one_value_recomputes_its_producer_before_its_reader() -> None:
    graph = chain(4)  # f0..f3 (ops 0-3), then g3..g0 (ops 4-7); g_i reads the input of f_i
    kept = set(structure(graph).saved) - {2}  # tensor 2 = output of f1, read by g2 (op 5)
    schedule, boundary = schedule_from_kept(graph, kept)
    assert schedule == (0, 1, 2, 3, 4, 1, 5, 6, 7)
    assert boundary == 4
    result = simulate(graph, schedule, boundary)
    assert result.recompute_time == 1.0
    assert result.peak == 400  # three kept activations + the tangent at the boundary


def test_keeping_nothing_recomputes_the_whole_prefix_once() -> None:
    graph = chain(4)
    schedule, _ = schedule_from_kept(graph, set())
    # g3 needs f2's output: recompute f0, f1, f2 (kept until their last use); g2.. reuse them.
    assert schedule == (0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7)


def test_reuse_window_zero_recomputes_again_for_each_reader() -> None:
    graph = chain(4)
    schedule, _ = schedule_from_kept(graph, set(), reuse_window=0)
    assert schedule == (0, 1, 2, 3, 0, 1, 2, 4, 0, 1, 5, 0, 6, 7)
    once = simulate(graph, *schedule_from_kept(graph, set()))
    twice = simulate(graph, schedule, 4)
    assert twice.recompute_time > once.recompute_time
    assert twice.peak < once.peak


def test_forward_outputs_and_unrecomputable_values_are_always_kept() -> None:
    builder = GraphBuilder()
    x = builder.input("x")
    a = builder.op("a", [x], 10, recomputable=False)
    b = builder.op("b", [a], 10)
    loss = builder.op("loss", [b], 1)
    builder.start_backward()
    grad = builder.input("dloss", 1, late=True)
    g = builder.op("gb", [grad, a, loss], 10)
    graph = builder.build(outputs=[loss, g], forward_outputs=[loss])
    schedule, boundary = schedule_from_kept(graph, set())
    assert schedule == (0, 1, 2, 3)  # a and loss are never recomputed
    simulate(graph, schedule, boundary)


def test_lazy_solver_fits_the_budget_or_names_its_floor() -> None:
    graph = chain(6)
    plan = solve(graph, 500, "lazy")
    assert plan.predicted_peak <= 500
    assert plan.recompute_time == 2.0
    with pytest.raises(InfeasibleBudgetError, match="300 B"):
        solve(graph, 299, "lazy")


def test_sweep_counts_cover_both_ends() -> None:
    assert sweep_counts(5) == (0, 1, 2, 3, 4, 5)
    counts = sweep_counts(1000, steps=10)
    assert counts[0] == 0 and counts[-1] == 1000 and len(counts) == 11
