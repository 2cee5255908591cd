"""Plans made from the gap relaxation's solutions (bound.py), for the ilp solver.

Each solution says which gaps to drop and which inputs to make again; split.direct_from_gaps
turns it into a schedule and split.repaired_plan into a plan, splitting where that schedule
overshoots the budget. What the
relaxation does not count (what a recomputation holds beyond its chains and their siblings,
e.g. the inputs of a causal mask made again) can leave that schedule over the budget where
splitting finds nothing to free at the peak (HF GPT-2, 48 layers at half the keep-all peak:
0.6% over, at the loss). Then the relaxation is solved once more at the budget less that
excess, and its solution tried; its bound, for a smaller budget, is not kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from remat.ir import Plan, RematGraph
from remat.solvers._common import plan_order, reaches_bound
from remat.solvers._fastsim import fast_simulate
from remat.solvers.bound import Solution, Solved, solve_relaxation, terms_for
from remat.solvers.split import Schedule, direct_from_gaps, repaired_plan

_RESOLVE_OF_LEFT = 0.6
"""Most of the time left that solving the relaxation again may take."""


def guided_plans(
    graph: RematGraph,
    budget: int,
    solved: Solved,
    best: Plan | None,
    copies: int,
    workers: int,
    until: float,
    say: Callable[[str], None],
) -> list[Plan]:
    """Plans from `solved`'s solutions until `until`; none once a plan meets the bound."""
    found: list[Plan] = []
    pending = _by_replay(graph, budget, solved.solutions)
    resolved = False
    while pending:
        start = pending.pop(0)
        if reaches_bound(best, solved.bound) or time.perf_counter() >= until:
            break
        plan = repaired_plan(graph, budget, start, copies, until)
        if plan is not None:
            found.append(plan)
            best = plan if best is None else min(best, plan, key=plan_order)
            say(f"relaxation's plan: {plan.recompute_time:.6g} s recompute")
            continue
        if resolved:
            continue
        resolved = True
        again = _resolved(graph, budget, start, workers, until)
        if again is not None:
            say(f"relaxation solved again {again[0]} B under the budget")
            pending.insert(0, direct_from_gaps(graph, again[1].dropped, again[1].remade))
    return found


def _by_replay(graph: RematGraph, budget: int, solutions: tuple[Solution, ...]) -> list[Schedule]:
    """The solutions' direct schedules, those within the budget first, the cheaper first: the
    relaxation's objective does not rank them (HF GPT-2, 96 layers at 0.35 of keep-all: the
    untied model's solution, 1% cheaper than the tied one's in the relaxation, replayed 39%
    dearer)."""
    starts = [direct_from_gaps(graph, s.dropped, s.remade) for s in solutions if s.dropped]
    replays = [fast_simulate(graph, *start) for start in starts]
    order = sorted(
        range(len(starts)), key=lambda i: (replays[i].peak > budget, replays[i].recompute_time)
    )
    return [starts[i] for i in order]


def _resolved(
    graph: RematGraph, budget: int, start: Schedule, workers: int, until: float
) -> tuple[int, Solution] | None:
    """The relaxation's first solution at the budget less the excess of `start`, a solution's
    direct schedule (None if it fits, or nothing is found in time)."""
    over = fast_simulate(graph, *start).peak - budget
    seconds = _RESOLVE_OF_LEFT * (until - time.perf_counter())
    if over <= 0 or seconds <= 0.1:
        return None
    again = solve_relaxation(graph, budget - over, seconds, workers, terms_for(seconds))
    if again is None or not again.solutions[0].dropped:
        return None
    return over, again.solutions[0]
