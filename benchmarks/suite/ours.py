"""remat's methods: remat.compile with the ILP or sqrt solver, and the torch.compile backend.

- remat-ilp: remat.compile(model, budget, solver="ilp", time_limit=...); rewritten graphs run
  as fx code (the same family as torch-budget).
- remat-sqrt: remat.compile(model, budget, solver="sqrt") (Chen et al. 2016 under the budget).
- remat-ilp-inductor: torch.compile(model, backend=remat.backend(budget, inner="inductor")),
  compared with torch-budget-inductor.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import remat
from benchmarks.suite.candidate import Candidate, Failed, describe_error
from benchmarks.suite.peers import _Compiled
from benchmarks.suite.workloads import Workload

REMAT_ILP = "remat-ilp"
REMAT_SQRT = "remat-sqrt"
REMAT_ILP_INDUCTOR = "remat-ilp-inductor"


@dataclass(frozen=True)
class Range:
    """remat's feasible budgets for a workload: [floor, keep_all] bytes."""

    floor: int
    keep_all: int
    floor_detail: str
    """The InfeasibleBudgetError's words on the floor (proven or the lowest found)."""

    def at(self, fraction: float) -> int:
        return self.floor + round(fraction * (self.keep_all - self.floor))


def probe_floor(
    workload: Workload, base: nn.Module, inputs: tuple, time_limit: float
) -> tuple[int, str]:
    """remat's floor, from the error a 1-byte budget raises, and the error's words on it."""
    step = remat.compile(
        workload.step_module(copy.deepcopy(base)), budget=1, solver="ilp", time_limit=time_limit
    )
    try:
        step(*inputs).backward()
    except remat.InfeasibleBudgetError as error:
        floor = error.floor
        detail = str(error).partition(f"pass budget >= {floor}")[2].strip(" ()") or "as found"
        return floor, detail
    raise AssertionError("remat accepted a 1-byte budget")


def probe_range(workload: Workload, base: nn.Module, inputs: tuple, time_limit: float) -> Range:
    """The floor (from the error a 1-byte budget raises) and the keep-all predicted peak."""
    floor, detail = probe_floor(workload, base, inputs, time_limit)
    keep = remat.compile(workload.step_module(copy.deepcopy(base)), budget=1.0, solver="none")
    keep(*inputs).backward()
    report = keep.remat_plan
    if report is None:
        raise RuntimeError("remat planned nothing for the keep-all probe")
    return Range(floor, report.keep_all_peak, detail)


def remat_compiled(
    workload: Workload,
    base: nn.Module,
    budget: int | float,
    *,
    method: str,
    setting: str,
    solver: str,
    time_limit: float | None,
) -> Candidate:
    model = copy.deepcopy(base)
    compiled = remat.compile(
        workload.step_module(model), budget=budget, solver=solver, time_limit=time_limit
    )
    resolved = budget if isinstance(budget, int) else None

    def facts() -> dict[str, Any]:
        return plan_facts(compiled.remat_plan)

    return Candidate(method, setting, resolved, compiled, model, facts=facts)


def remat_inductor(
    workload: Workload, base: nn.Module, budget: int, *, setting: str, time_limit: float
) -> Candidate | Failed:
    """remat's torch.compile backend with Inductor compiling the rewritten graphs."""
    try:
        backend = remat.backend(budget, solver="ilp", time_limit=time_limit, inner="inductor")
    except (AttributeError, TypeError, ValueError) as error:
        return Failed(
            REMAT_ILP_INDUCTOR, setting, budget, f"remat.backend: {describe_error(error)}"
        )
    model = copy.deepcopy(base)
    compiled = torch.compile(workload.step_module(model), backend=backend)

    def facts() -> dict[str, Any]:
        return plan_facts(getattr(backend, "last_plans", None))

    return Candidate(REMAT_ILP_INDUCTOR, setting, budget, _Compiled(compiled), model, facts=facts)


def plan_facts(report: Any) -> dict[str, Any]:
    """What the plan says: predicted peak, recompute FLOPs, planning time, solver status."""
    if report is None:
        return {"compiled": False}
    graphs = report.graphs
    gaps = [g.gap for g in graphs if g.gap is not None]
    return {
        "compiled": True,
        "budget_bytes": report.step_budget_bytes,
        "predicted_peak": report.predicted_peak,
        "keep_all_predicted": report.keep_all_peak,
        "recompute_flops": sum(g.recompute_flops for g in graphs),
        "plan_s": sum(g.plan_s for g in graphs),
        "graphs": len(graphs),
        "ops": sum(g.ops for g in graphs),
        "solver_status": "/".join(g.status for g in graphs),
        "gap": max(gaps) if gaps else None,
        # From the third call a step with nothing to recompute may run the model as written.
        "runs_eagerly": getattr(report, "runs_eagerly", False),
        "eager_fake_peak": getattr(report, "eager_peak_bytes", None),
        "eager_probed_peak": getattr(report, "eager_probed_bytes", None),
    }
