"""Repeated blocks solved once (remat.solvers.template): blocks matched, plans alike per block."""

from __future__ import annotations

import math
from dataclasses import replace

from test_structured import layered

from remat.ir import RematGraph
from remat.simulate import simulate
from remat.solvers import keep_all_plan, solve
from remat.solvers.lazy import structure
from remat.solvers.template import find_templates, template_plans

BLOCKS = 6


def test_matching_blocks_tie_each_position_across_blocks() -> None:
    graph, ids = layered(BLOCKS)
    one, two = find_templates(graph)
    assert (one.group, two.group) == (1, 2) and one.blocks == BLOCKS
    a_class = tuple(ids[f"a{i}"] for i in range(BLOCKS))
    assert a_class in one.classes
    assert tuple(ids[f"a{i}"] for i in range(0, BLOCKS, 2)) in two.classes
    # the embedding is saved but outside the blocks: a class of its own
    assert (ids["e"],) in one.classes


def _widened(graph: RematGraph, tensors: list[int]) -> RematGraph:
    """`graph` with each of `tensors` one byte larger (its block no longer matches)."""
    changed = list(graph.tensors)
    for tensor in tensors:
        changed[tensor] = replace(changed[tensor], bytes=changed[tensor].bytes + 1)
    return replace(graph, tensors=tuple(changed))


def test_a_block_that_differs_is_decided_alone_and_the_rest_stay_tied() -> None:
    graph, ids = layered(BLOCKS)
    one, _ = find_templates(_widened(graph, [ids["a3"]]))
    assert one.blocks == BLOCKS - 1
    assert tuple(ids[f"a{i}"] for i in (0, 1, 2, 4, 5)) in one.classes
    assert (ids["a3"],) in one.classes and (ids["b3"],) in one.classes


def test_fewer_than_three_matching_blocks_make_no_template() -> None:
    graph, ids = layered(4)
    (one,) = find_templates(_widened(graph, [ids["a3"]]))  # three match: tied, no pairs
    assert one.blocks == 3
    assert find_templates(_widened(graph, [ids["a2"], ids["a3"]])) == ()  # two pairs


def test_template_plans_fit_and_decide_each_class_for_every_block() -> None:
    graph, _ = layered(BLOCKS)
    keep_all = keep_all_plan(graph).predicted_peak
    (one, _two) = find_templates(graph)
    saved = set(structure(graph).saved)
    uniform_with_drops = 0
    for fraction in (0.5, 0.6, 0.7, 0.8, 0.9):
        budget = int(keep_all * fraction)
        for plan in template_plans(graph, budget, math.inf):
            checked = simulate(graph, plan.schedule, plan.boundary)
            assert checked.peak == plan.predicted_peak <= budget
            if "every block alike" not in plan.notes[0]:
                continue
            kept = saved & set(checked.saved)
            uniform_with_drops += kept != saved
            for members in one.classes:  # all of a class kept, or none
                assert len({tensor in kept for tensor in members}) == 1, members
    assert uniform_with_drops > 0


def test_the_solver_is_never_worse_than_the_template() -> None:
    graph, _ = layered(BLOCKS)
    budget = int(keep_all_plan(graph).predicted_peak * 0.6)
    templated = template_plans(graph, budget, math.inf)
    assert templated
    plan = solve(graph, budget, "ilp", time_limit=10, workers=1)
    assert plan.predicted_peak <= budget
    assert plan.recompute_time <= min(p.recompute_time for p in templated) * (1 + 1e-9)


def test_graphs_without_repeated_blocks_get_no_template_plans() -> None:
    graph, _ = layered(2)  # two blocks: too few to tie
    assert find_templates(graph) == ()
    assert template_plans(graph, keep_all_plan(graph).predicted_peak, math.inf) == []
