"""The floor: the lowest peak any plan reaches, for infeasible-budget errors and reports."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NoReturn

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, RematGraph
from remat.solvers._common import fast_plan, lowest_peak, make_plan
from remat.solvers.bound import relaxation
from remat.solvers.cpsat import run_cpsat
from remat.solvers.evict import eviction_schedule
from remat.solvers.heuristics import budget_free_plans
from remat.solvers.ilp_model import RetentionModel
from remat.solvers.ilp_problem import build_problem


@dataclass(frozen=True)
class Floor:
    bytes: int
    """The lowest simulated peak found: a budget this high is always feasible."""
    proven: bool
    """No plan goes lower: a step's own inputs and outputs need this much, or CP-SAT proved it
    for its model (up to `copies` executions per op)."""
    plan: Plan


@dataclass(frozen=True)
class _Search:
    workers: int = 1
    seed: int = 0


def lean_plan(graph: RematGraph) -> Plan:
    """The lowest-peak plan among the budget-free heuristics (per-block checkpointing and its
    kin), found in moments: no solver runs."""
    lowest = lowest_peak(budget_free_plans(graph))
    return make_plan(graph, lowest.schedule, lowest.boundary, solver=lowest.solver)


def find_floor(
    graph: RematGraph,
    time_limit: float = 10.0,
    *,
    copies: int = 2,
    workers: int = 1,
    extra: tuple[Plan, ...] = (),
    walk: bool = False,
) -> Floor:
    """The lowest peak among the heuristic plans and CP-SAT's minimum-peak plan.

    walk=True also bisects the budget at which the eviction walk still finds a plan: it
    recomputes as often as it needs (a chain's floor can drop severalfold) but its plans run
    some ops many times.
    """
    start = time.perf_counter()
    problem = build_problem(graph, copies, recompute_backward=False)
    known = relaxation(graph).floor_units() * problem.mem_unit
    lowest = lowest_peak([*budget_free_plans(graph), *extra])
    below: list[Plan] = []
    if walk:
        until = start + time_limit / 3
        lowest = lowest_peak([lowest, *_bisect_walk(graph, known, lowest.predicted_peak, until)])
        below = _bisect_walk(graph, known // 2, known, until, _BELOW_BOUND_STEPS)
    heuristic = make_plan(graph, lowest.schedule, lowest.boundary, solver=lowest.solver)
    candidates = [heuristic]
    if below:
        walked = lowest_peak(below)
        candidates.append(make_plan(graph, walked.schedule, walked.boundary, solver=walked.solver))
    best = lowest_peak(candidates)
    if best.predicted_peak <= known:
        return Floor(best.predicted_peak, True, best)
    built = RetentionModel(problem, capacity=None, minimize="peak")
    left = time_limit - (time.perf_counter() - start)
    # Hinted with the best plan above the bound's walks: the walks below it recompute too
    # often for the model to place, and a partial hint left CP-SAT short (HF Llama tiny).
    run = run_cpsat(built, _Search(workers=workers), left, heuristic.schedule, lambda _: None)
    if run.schedule is None:
        return Floor(best.predicted_peak, False, best)
    plan = make_plan(graph, run.schedule, run.boundary, solver="floor")
    best = lowest_peak([best, plan])
    bound_bytes = (run.bound or 0) * problem.mem_unit
    proven = best.predicted_peak <= known or (run.optimal and best.predicted_peak <= bound_bytes)
    return Floor(best.predicted_peak, proven, best)


_BELOW_BOUND_STEPS = 8
"""Walks asked below the bound: enough to place the asked budget within 1/256 of the range,
few enough to leave CP-SAT's minimum-peak search its time (on HF Llama tiny it found a floor
1.2% lower than the walks when it was not starved)."""


def _bisect_walk(
    graph: RematGraph, low: int, high: int, deadline: float, steps: int | None = None
) -> list[Plan]:
    """Bisect the budget at which the eviction walk still finds a plan (it recomputes as often
    as it needs, beyond any model's copies), at most `steps` walks.

    Asked for less than the floor, the walk evicts harder and its peak, above what it was
    asked, can fall further (HF GPT-NeoX tiny: asked 2.36 MB it peaks at 2.83, asked 1.84 it
    peaks at 2.36, the floor), so find_floor also asks between half the bound and the bound.
    """
    found: list[Plan] = []
    while low < high and time.perf_counter() < deadline and steps != 0:
        steps = None if steps is None else steps - 1
        middle = (low + high) // 2
        walk = eviction_schedule(graph, middle, weight=0.5, deadline=deadline)
        if walk is None:
            low = middle + 1
            continue
        found.append(fast_plan(graph, *walk, solver="evict", notes=("evict: floor search",)))
        high = min(middle, found[-1].predicted_peak) - 1
    return found


def floor_or_raise(graph: RematGraph, budget: int, heuristics: list[Plan], deadline: float) -> Plan:
    """The floor plan if it fits `budget`; otherwise raise InfeasibleBudgetError with the floor."""
    left = max(1.0, deadline - time.perf_counter())
    floor = find_floor(graph, left, extra=tuple(heuristics), walk=True)
    if floor.plan.predicted_peak <= budget:
        return floor.plan
    _raise(budget, floor)


def _raise(budget: int, floor: Floor) -> NoReturn:
    detail = "proven minimum" if floor.proven else "lowest peak found; a lower one may exist"
    raise InfeasibleBudgetError(budget, floor.bytes, detail, floor_plan=floor.plan)
