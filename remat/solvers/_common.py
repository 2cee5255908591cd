"""Helpers every solver shares: scoring a schedule into a Plan, and choosing among plans.

A plan is only ever built here, from a schedule replayed by the simulator, so every Plan a
solver returns carries the simulator's peak and cost, never a solver's own estimate, and the
simulation itself (`Plan.simulation`), which consumers read instead of replaying the plan again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NoReturn

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, PlanStatus, RematGraph
from remat.simulate import InvalidScheduleError, simulate
from remat.solvers._fastsim import fast_simulate


def make_plan(
    graph: RematGraph,
    schedule: Sequence[int],
    boundary: int,
    *,
    solver: str,
    status: PlanStatus = PlanStatus.HEURISTIC,
    budget: int | None = None,
    lower_bound: float | None = None,
    solve_s: float = 0.0,
    notes: Sequence[str] = (),
) -> Plan:
    """Replay `schedule` in the simulator and wrap it, with the simulation, in a Plan."""
    result = simulate(graph, schedule, boundary)
    return Plan(
        schedule=tuple(schedule),
        boundary=boundary,
        solver=solver,
        status=status,
        budget=budget,
        predicted_peak=result.peak,
        recompute_time=result.recompute_time,
        recompute_flops=result.recompute_flops,
        lower_bound=lower_bound,
        solve_s=solve_s,
        notes=tuple(notes),
        simulation=result,
    )


def fast_plan(
    graph: RematGraph, schedule: Sequence[int], boundary: int, *, solver: str, notes: Sequence[str]
) -> Plan:
    """A heuristic candidate scored by the fast replay (confirm it before returning it).

    It carries no simulation: the fast replay finds the peak and the recompute time, not what
    is saved, and a candidate is replayed by the simulator (make_plan) once it is chosen.
    """
    result = fast_simulate(graph, schedule, boundary)
    return Plan(
        schedule=tuple(schedule),
        boundary=boundary,
        solver=solver,
        status=PlanStatus.HEURISTIC,
        budget=None,
        predicted_peak=result.peak,
        recompute_time=result.recompute_time,
        recompute_flops=0,
        notes=tuple(notes),
    )


def confirmed_best(graph: RematGraph, plans: Iterable[Plan], budget: int) -> Plan | None:
    """The cheapest plan within `budget`, replayed by the simulator (ties: lower peak)."""
    for plan in sorted((p for p in plans if p.predicted_peak <= budget), key=plan_order):
        try:
            checked = make_plan(
                graph, plan.schedule, plan.boundary, solver=plan.solver, notes=plan.notes
            )
        except InvalidScheduleError:
            continue  # a heuristic's slip (e.g. an op rerun that may not be): the next plan
        if checked.predicted_peak <= budget:
            return checked
    return None


def reference_schedule(graph: RematGraph) -> tuple[tuple[int, ...], int]:
    """The step as eager runs it: every op once, in the reference order."""
    return tuple(range(len(graph.ops))), graph.boundary


def keep_all_plan(graph: RematGraph) -> Plan:
    """The plan that recomputes nothing (what eager does)."""
    schedule, boundary = reference_schedule(graph)
    return make_plan(graph, schedule, boundary, solver="none")


def plan_order(plan: Plan) -> tuple[float, int, int, tuple[int, ...]]:
    """Sort key: cheaper first, then lower peak, then shorter, then the schedule itself.

    The last key makes the choice among equal plans independent of the order they were found in.
    """
    return (plan.recompute_time, plan.predicted_peak, len(plan.schedule), plan.schedule)


def reaches_bound(plan: Plan | None, bound: float | None) -> bool:
    """The plan's recompute time is (up to rounding) the bound: nothing cheaper exists."""
    if plan is None or bound is None:
        return False
    return plan.recompute_time <= bound * (1 + 1e-9) + 1e-12


def best_within(plans: Iterable[Plan], budget: int) -> Plan | None:
    """The cheapest plan whose simulated peak is <= budget (ties: lower peak), or None."""
    fitting = [plan for plan in plans if plan.predicted_peak <= budget]
    return min(fitting, key=plan_order) if fitting else None


def lowest_peak(plans: Iterable[Plan]) -> Plan:
    """The plan with the lowest simulated peak (ties: cheaper)."""
    return min(plans, key=lambda plan: (plan.predicted_peak, *plan_order(plan)))


def raise_infeasible(budget: int, plans: Sequence[Plan], solver: str) -> NoReturn:
    """Raise InfeasibleBudgetError with the lowest peak `solver` reached as the floor."""
    floor = lowest_peak(plans)
    raise InfeasibleBudgetError(
        budget, floor.predicted_peak, f"lowest peak the {solver!r} solver reaches"
    )
