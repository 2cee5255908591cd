"""The gap relaxation (bound.py): it counts what the simulator counts, and bounds every plan."""

from __future__ import annotations

import random

import pytest
from factories import (
    GraphBuilder,
    attention_core,
    random_general_graph,
    random_training_graph,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_structured import layered

from remat.ir import RematGraph
from remat.simulate import simulate
from remat.solvers import bound, keep_all_plan, solve
from remat.solvers.bound import Relaxation, relaxation, solve_relaxation
from remat.solvers.gaps import alike_gaps
from remat.solvers.lazy import schedule_from_kept, structure
from remat.solvers.split import direct_from_gaps
from remat.solvers.template import find_templates

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _held_if_nothing_dropped(relaxed: Relaxation, graph: RematGraph) -> list[int]:
    """Bytes the relaxation counts at each op's position when it drops no gap."""
    count = len(graph.ops)
    opened = [0] * (count + 1)
    for gap in relaxed.gaps:
        opened[gap.after + 1] += gap.size
        opened[gap.before] -= gap.size
    held, running = [], 0
    for position in range(count):
        running += opened[position]
        held.append((relaxed.fixed[position] + running) * relaxed.problem.mem_unit)
    return held


def _returned_view_graph() -> RematGraph:
    """The LM-head shape: big logits, returned as a view, read by the loss; the backward runs
    long after, so the logits' storage is held through it."""
    builder = GraphBuilder("returned view")
    x = builder.input("x")
    hidden = builder.op("hidden", [x], 10, 1.0)
    logits = builder.op("logits", [hidden], 100, 1.0)
    returned = builder.op("returned", [logits], 0, 0.0, view_of=logits)
    loss = builder.op("loss", [logits], 4, 0.5)
    builder.start_backward()
    grad = builder.input("tangent", 4, late=True)
    grad = builder.op("g_hidden", [grad, hidden], 10, 1.0)
    grad = builder.op("g_x", [grad], 10, 1.0)
    return builder.build(outputs=[loss, returned, grad], forward_outputs=[loss, returned])


def test_a_returned_views_storage_is_held_to_the_end() -> None:
    graph = _returned_view_graph()
    held = _held_if_nothing_dropped(relaxation(graph), graph)
    assert held == list(keep_all_plan(graph).simulation.timeline)
    assert min(held[graph.boundary :]) >= 100  # the logits, through the whole backward


@SETTINGS
@given(rng=st.randoms(use_true_random=False), forward_ops=st.integers(2, 12))
def test_nothing_dropped_counts_the_keep_all_timeline(rng: random.Random, forward_ops: int) -> None:
    graph = random_training_graph(rng, forward_ops)
    held = _held_if_nothing_dropped(relaxation(graph), graph)
    assert held == list(keep_all_plan(graph).simulation.timeline)


@SETTINGS
@given(rng=st.randoms(use_true_random=False), general=st.booleans(), size=st.integers(3, 10))
def test_the_bound_is_below_every_lazy_plan(rng: random.Random, general: bool, size: int) -> None:
    graph = random_general_graph(rng, size) if general else random_training_graph(rng, size)
    saved = structure(graph).saved
    for _ in range(4):
        kept = [tensor for tensor in saved if rng.random() < 0.5]
        schedule, boundary = schedule_from_kept(graph, kept, reuse_window=rng.choice([None, 1]))
        replay = simulate(graph, schedule, boundary)
        solved = solve_relaxation(graph, replay.peak, time_limit=5.0)
        assert solved is not None, "a plan fits, yet the relaxation calls the budget infeasible"
        assert solved.bound <= replay.recompute_time * (1 + 1e-9) + 1e-12


def test_dropping_a_value_charges_the_chain_of_dead_inputs_it_is_made_from() -> None:
    graph = attention_core()
    keep_all = keep_all_plan(graph).predicted_peak
    # One byte under keep-all the probabilities cannot be held while g_big runs; remaking
    # them needs the scaled scores and those the scores: 1 + 1 + 10 seconds, the best plan's.
    solved = solve_relaxation(graph, keep_all - 1)
    assert solved is not None
    assert solved.bound == pytest.approx(12.0, rel=1e-4)


def test_a_remade_chain_holds_or_remakes_the_other_inputs_of_its_ops() -> None:
    graph = attention_core(masked=True, backward_size=30)
    forward, backward = [0, 1, 2, 3, 4, 5], [6, 7]
    # The probabilities made again before g_probs, the mask with them or held from the forward.
    remade_mask = simulate(graph, [*forward, *backward, 0, 1, 2, 3, 8, 9], 6)
    held_mask = simulate(graph, [*forward, *backward, 0, 2, 3, 8, 9], 6)
    assert held_mask.peak > remade_mask.peak, "the test needs holding the mask not to fit"
    solved = solve_relaxation(graph, remade_mask.peak)
    assert solved is not None
    # Without the mask counted the bound was the chain's 12 s; holding the mask does not fit,
    # so it is made again too (0.1 s): the best plan's cost.
    assert solved.bound == pytest.approx(remade_mask.recompute_time, rel=1e-4)
    assert remade_mask.recompute_time == pytest.approx(12.1)


def test_repeated_blocks_add_a_tied_solution_but_not_its_bound(monkeypatch) -> None:
    graph, _ = layered(6)
    budget = int(keep_all_plan(graph).predicted_peak * 0.6)
    solved = solve_relaxation(graph, budget)
    assert solved is not None and len(solved.solutions) == 2
    (one, _two) = find_templates(graph)
    tied = set(solved.solutions[1].dropped)
    relaxed = relaxation(graph)
    for indices in alike_gaps(relaxed, one.classes):  # every block alike, or none
        assert len({relaxed.gaps[i] in tied for i in indices}) == 1
    # Tying costs here (one block's values dropped beside the others' would do), yet the bound
    # is the untied relaxation's, which the best plan reaches.
    replays = [
        simulate(graph, *direct_from_gaps(graph, s.dropped, s.remade)) for s in solved.solutions
    ]
    assert replays[1].recompute_time > solved.bound
    monkeypatch.setattr(bound, "find_templates", lambda graph: ())
    untied = solve_relaxation(graph, budget)
    assert untied is not None and solved.bound == pytest.approx(untied.bound)
    plan = solve(graph, budget, "ilp", time_limit=10, workers=1)
    assert plan.recompute_time == pytest.approx(solved.bound, rel=1e-6)
