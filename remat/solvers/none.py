"""`none`: keep everything, recompute nothing (what eager does)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, PlanStatus, RematGraph
from remat.solvers._common import keep_all_plan
from remat.solvers.base import register


@dataclass(frozen=True, kw_only=True)
class NoneConfig:
    """`none` has no settings."""


@register("none")
class NoneSolver:
    """Keeps every value: the reference order, once each. Optimal whenever it fits."""

    name = "none"

    def __init__(self, **config: object) -> None:
        self.config = NoneConfig(**config)  # type: ignore[arg-type]

    def solve(self, graph: RematGraph, budget: int) -> Plan:
        start = time.perf_counter()
        plan = keep_all_plan(graph)
        if plan.predicted_peak > budget:
            raise InfeasibleBudgetError(
                budget, plan.predicted_peak, "the 'none' solver keeps everything; try 'auto'"
            )
        return replace(
            plan,
            budget=budget,
            status=PlanStatus.OPTIMAL,
            lower_bound=0.0,
            solve_s=time.perf_counter() - start,
        )
