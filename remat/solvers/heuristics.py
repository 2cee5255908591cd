"""The heuristic plans every search starts from: warm starts for the ILP and its fallback."""

from __future__ import annotations

import time

from remat.ir import Plan, RematGraph
from remat.solvers._common import fast_plan, reference_schedule
from remat.solvers._per_graph import per_graph
from remat.solvers.evict import eviction_plans
from remat.solvers.lazy import Schedule, default_steps, lazy_family
from remat.solvers.shave import shaved_plans
from remat.solvers.split import split_plans
from remat.solvers.sqrt import sqrt_family
from remat.solvers.structured import structured_family
from remat.solvers.template import template_plans


@per_graph
def budget_free_plans(graph: RematGraph) -> tuple[Plan, ...]:
    """Keep-all, the lazy, sqrt and structured families: plans that do not depend on a budget.

    The structured ones (per-block checkpointing and its kin) make every solve and the floor at
    least as lean as what users write by hand.

    Scored by the fast replay; pick with confirmed_best, which replays the pick in the simulator.
    """
    family: list[tuple[Schedule, str]] = [(reference_schedule(graph), "keep all")]
    if graph.boundary < len(graph.ops):
        steps = default_steps(graph)
        family += lazy_family(graph, steps) + sqrt_family(graph, steps)
        family += structured_family(graph)
    seen: set[Schedule] = set()
    plans = []
    for schedule, label in family:
        if schedule in seen:
            continue
        seen.add(schedule)
        plans.append(fast_plan(graph, *schedule, solver="heuristic", notes=(label,)))
    return tuple(plans)


def first_plans(graph: RematGraph, budget: int, template_deadline: float) -> list[Plan]:
    """The budget-free plans and the repeated-blocks search's (until `template_deadline`)."""
    return [*budget_free_plans(graph), *template_plans(graph, budget, template_deadline)]


def budget_plans(graph: RematGraph, budget: int, copies: int, deadline: float) -> list[Plan]:
    """Eviction, structured plans shaved to `budget`, splitting from keep-all (with pruning),
    until `deadline`."""
    plans = eviction_plans(graph, budget, deadline)
    plans += shaved_plans(graph, budget, deadline)
    if time.perf_counter() < deadline:
        plans += split_plans(graph, budget, copies, deadline)
    return plans
