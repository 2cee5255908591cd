"""The floor: the lowest peak any plan reaches, for infeasible-budget errors and reports."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NoReturn

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, RematGraph
from remat.solvers._common import lowest_peak, make_plan
from remat.solvers.bound import relaxation
from remat.solvers.cpsat import run_cpsat
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


def find_floor(
    graph: RematGraph,
    time_limit: float = 10.0,
    *,
    copies: int = 2,
    workers: int = 1,
    extra: tuple[Plan, ...] = (),
) -> Floor:
    """The lowest peak among the heuristic plans and CP-SAT's minimum-peak plan."""
    start = time.perf_counter()
    lowest = lowest_peak([*budget_free_plans(graph), *extra])
    heuristic = make_plan(graph, lowest.schedule, lowest.boundary, solver=lowest.solver)
    problem = build_problem(graph, copies, recompute_backward=False)
    built = RetentionModel(problem, capacity=None, minimize="peak")
    left = time_limit - (time.perf_counter() - start)
    run = run_cpsat(built, _Search(workers=workers), left, heuristic.schedule, lambda _: None)
    if run.schedule is None:
        return Floor(heuristic.predicted_peak, False, heuristic)
    plan = make_plan(graph, run.schedule, run.boundary, solver="floor")
    best = lowest_peak([heuristic, plan])
    bound_bytes = (run.bound or 0) * problem.mem_unit
    relaxed = relaxation(graph, problem)
    proven = best.predicted_peak <= relaxed.floor_units() * problem.mem_unit or (
        run.optimal and best.predicted_peak <= bound_bytes
    )
    return Floor(best.predicted_peak, proven, best)


def floor_or_raise(graph: RematGraph, budget: int, heuristics: list[Plan], deadline: float) -> Plan:
    """The floor plan if it fits `budget`; otherwise raise InfeasibleBudgetError with the floor."""
    left = max(1.0, deadline - time.perf_counter())
    floor = find_floor(graph, left, extra=tuple(heuristics))
    if floor.plan.predicted_peak <= budget:
        return floor.plan
    _raise(budget, floor)


def _raise(budget: int, floor: Floor) -> NoReturn:
    detail = "proven minimum" if floor.proven else "lowest peak found; a lower one may exist"
    raise InfeasibleBudgetError(budget, floor.bytes, detail)
