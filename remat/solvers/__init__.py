"""Solvers: (RematGraph, budget in bytes) -> Plan.

    from remat.solvers import solve
    plan = solve(graph, budget=2**30)                  # "auto": ilp with a short time limit
    plan = solve(graph, 2**30, solver="sqrt")
    plan = solve(graph, 2**30, solver="ilp", time_limit=60, workers=2)

Every plan has been replayed by the simulator and fits its budget; an infeasible budget raises
remat.budget.InfeasibleBudgetError stating the floor.
"""

from __future__ import annotations

from remat.ir import Plan, RematGraph
from remat.solvers import ilp, lazy, none, sqrt  # noqa: F401  (registers the solvers)
from remat.solvers._common import keep_all_plan
from remat.solvers.base import get_solver, register, solver_names
from remat.solvers.floor import Floor, find_floor, lean_plan
from remat.solvers.lazy import schedule_from_kept

AUTO_TIME_LIMIT = 5.0
"""Seconds `auto` gives the whole ilp solve."""


@register("auto")
def _auto(**config: object) -> ilp.IlpSolver:
    """ilp with a short time limit, unless the caller sets one."""
    config.setdefault("time_limit", AUTO_TIME_LIMIT)
    solver = ilp.IlpSolver(**config)
    solver.name = "auto"
    return solver


def solve(graph: RematGraph, budget: int, solver: str = "auto", **config: object) -> Plan:
    """A plan for `graph` whose simulated peak is <= `budget` bytes."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int number of bytes, got {budget!r}")
    return get_solver(solver, **config).solve(graph, budget)


__all__ = [
    "Floor",
    "find_floor",
    "get_solver",
    "keep_all_plan",
    "lean_plan",
    "schedule_from_kept",
    "solve",
    "solver_names",
]
