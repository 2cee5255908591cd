"""The heuristic plans every search starts from: warm starts for the ILP and its fallback."""

from __future__ import annotations

import functools

from remat.ir import Plan, RematGraph
from remat.solvers._common import make_plan, reference_schedule
from remat.solvers.lazy import Schedule, lazy_family
from remat.solvers.sqrt import sqrt_family


@functools.lru_cache(maxsize=4)
def budget_free_plans(graph: RematGraph) -> tuple[Plan, ...]:
    """Keep-all, the lazy family and the sqrt family: plans that do not depend on a budget."""
    family: list[tuple[Schedule, str]] = [(reference_schedule(graph), "keep all")]
    if graph.boundary < len(graph.ops):
        family += lazy_family(graph) + sqrt_family(graph)
    seen: set[Schedule] = set()
    plans = []
    for schedule, label in family:
        if schedule in seen:
            continue
        seen.add(schedule)
        plans.append(make_plan(graph, *schedule, solver="heuristic", notes=(label,)))
    return tuple(plans)
