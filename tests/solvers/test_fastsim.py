"""The heuristics' fast replay agrees with the simulator on every valid schedule."""

from __future__ import annotations

import random

from factories import (
    GraphBuilder,
    random_general_graph,
    random_schedule,
    random_training_graph,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remat.simulate import InvalidScheduleError, simulate
from remat.solvers._fastsim import fast_simulate


def _agree(graph, schedule, boundary) -> bool:  # type: ignore[no-untyped-def]
    try:
        reference = simulate(graph, schedule, boundary)
    except InvalidScheduleError:
        return False
    fast = fast_simulate(graph, schedule, boundary)
    assert fast.peak == reference.peak
    assert fast.peak_step == reference.peak_step
    assert fast.timeline == reference.timeline
    assert fast.boundary_bytes == reference.boundary_bytes
    assert fast.recompute_time == reference.recompute_time
    return True


@settings(max_examples=60, deadline=None)
@given(rng=st.randoms(use_true_random=False), forward_ops=st.integers(1, 12))
def test_random_recomputations_replay_the_same(rng: random.Random, forward_ops: int) -> None:
    graph = random_training_graph(rng, forward_ops)
    schedule = list(range(len(graph.ops)))
    boundary = graph.boundary
    assert _agree(graph, schedule, boundary)
    for _ in range(rng.randint(1, 8)):
        op_id = rng.randrange(len(graph.ops))
        first = schedule.index(op_id)
        at = rng.randint(first + 1, len(schedule))
        trial = schedule[:at] + [op_id] + schedule[at:]
        trial_boundary = boundary + (1 if at < boundary else 0)
        if _agree(graph, trial, trial_boundary):
            schedule, boundary = trial, trial_boundary


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), ops=st.integers(1, 14))
def test_any_graph_any_valid_schedule_replays_the_same(rng: random.Random, ops: int) -> None:
    """Random graphs of every shape the IR allows, random orders with recomputations and random
    boundaries: whatever the simulator accepts, the fast replay scores identically."""
    graph = random_general_graph(rng, ops)
    assert _agree(graph, list(range(len(graph.ops))), graph.boundary)
    for _ in range(8):
        _agree(graph, *random_schedule(graph, rng))


def test_the_generator_makes_mostly_valid_schedules_with_recomputations() -> None:
    rng = random.Random(0)
    accepted = recomputing = 0
    for _ in range(200):
        graph = random_general_graph(rng, rng.randint(1, 14))
        schedule, boundary = random_schedule(graph, rng)
        if _agree(graph, schedule, boundary):
            accepted += 1
            recomputing += len(schedule) > len(graph.ops)
    assert accepted >= 150 and recomputing >= 80


def test_a_late_input_nobody_reads_counts_at_the_boundary_only() -> None:
    builder = GraphBuilder()
    x = builder.input("x")
    builder.op("a", [x], 10)
    builder.start_backward()
    builder.input("unused tangent", 7, late=True)
    builder.op("g", [x], 1)
    graph = builder.build()
    result = simulate(graph, (0, 1), 1)
    assert result.timeline == (10, 8)  # the tangent arrives at the boundary, nothing goes negative
    assert _agree(graph, (0, 1), 1)
