"""Plans from the relaxation's solutions (guided.py)."""

from __future__ import annotations

import time

import pytest
from factories import attention_core
from test_structured import layered

from remat.simulate import simulate
from remat.solvers import keep_all_plan
from remat.solvers.bound import Solution, solve_relaxation
from remat.solvers.guided import _by_replay, _resolved, guided_plans
from remat.solvers.split import direct_from_gaps


def _budget_and_solved():
    graph = attention_core(masked=True, backward_size=30)
    forward, backward = [0, 1, 2, 3, 4, 5], [6, 7]
    remade = simulate(graph, [*forward, *backward, 0, 1, 2, 3, 8, 9], 6).peak
    held = simulate(graph, [*forward, *backward, 0, 2, 3, 8, 9], 6).peak
    # Between the two: the probabilities made again with the mask fit, with it held do not,
    # and the budget less the excess of holding it still admits the first.
    budget = (remade + held) // 2
    assert remade <= budget - (held - budget)
    solved = solve_relaxation(graph, budget)
    assert solved is not None
    return graph, budget, solved


def test_the_relaxations_plan_meets_its_bound() -> None:
    graph, budget, solved = _budget_and_solved()
    plans = guided_plans(graph, budget, solved, None, 2, 1, time.perf_counter() + 10, print)
    assert plans and plans[0].predicted_peak <= budget
    assert plans[0].recompute_time == pytest.approx(solved.bound, rel=1e-4)


def test_a_schedule_over_the_budget_is_solved_again_under_its_excess() -> None:
    graph, budget, solved = _budget_and_solved()
    mask = 1  # the op making the mask
    best = solved.solutions[0]
    # The solution the relaxation gave before it counted the mask: the chain made again, the
    # mask held from the forward.
    held = Solution(best.dropped, tuple(item for item in best.remade if item[1] != mask))
    start = direct_from_gaps(graph, held.dropped, held.remade)
    direct = simulate(graph, *start)
    assert direct.peak > budget
    again = _resolved(graph, budget, start, workers=1, until=time.perf_counter() + 10)
    assert again is not None
    over, solution = again
    assert over == direct.peak - budget
    fixed = direct_from_gaps(graph, solution.dropped, solution.remade)
    assert simulate(graph, *fixed).peak <= budget


def test_solutions_are_tried_within_the_budget_and_cheapest_first() -> None:
    graph, _ = layered(6)
    budget = int(keep_all_plan(graph).predicted_peak * 0.6)
    solved = solve_relaxation(graph, budget)
    assert solved is not None
    # The tied solution (over the budget here) given first, the untied one second.
    tied_first = (solved.solutions[1], solved.solutions[0])
    replays = [simulate(graph, *start) for start in _by_replay(graph, budget, tied_first)]
    assert replays[0].peak <= budget < replays[1].peak
    assert replays[0].recompute_time == pytest.approx(solved.bound, rel=1e-6)
