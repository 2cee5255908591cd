"""`analyze`: capture a step once, then plan it at each budget and along the trade-off curve.

Pure computation: no printing, no files. Progress goes to a callback (label, done, total) so the
CLI can draw a bar. Budgets below the floor are results too (infeasible, with the message).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remat.analysis.memory import TOP_LEVEL, ModelBytes, PeakBreakdown, model_bytes, peak_breakdown
from remat.analysis.points import Measurements
from remat.analysis.step import (
    CapturedStep,
    capture_step,
    held_bytes,
    plan_step,
    step_gap,
    step_peak,
    step_status,
)
from remat.analysis.target import Target
from remat.budget import Budget, InfeasibleBudgetError
from remat.ir import Plan
from remat.simulate import simulation_of
from remat.solvers import find_floor, get_solver

ProgressFn = Callable[[str, int, int], None]
"""Receives (what is being done, units done, units in all)."""


@dataclass(frozen=True, kw_only=True)
class AnalysisOptions:
    budgets: tuple[tuple[str, Budget], ...]
    """(what the user wrote, parsed budget) for each budget to report."""
    solver: str = "auto"
    time_limit: float | None = None
    """Seconds per budget's solve (solvers that take a time limit); None: the solver's default."""
    samples: int = 12
    """Budgets sampled between the floor and the keep-all peak for the trade-off curve."""
    sample_time_limit: float = 1.0
    floor_time_limit: float = 5.0

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        for name in ("sample_time_limit", "floor_time_limit"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {self.time_limit}")


@dataclass(frozen=True)
class ModuleRecompute:
    module: str
    runs: int
    """Extra op executions in this module (recomputations)."""
    flops: int


@dataclass(frozen=True)
class BudgetResult:
    label: str
    budget_bytes: int
    feasible: bool
    solver: str
    plans: tuple[Plan, ...] = ()
    """One plan per captured graph (empty when infeasible)."""
    held: tuple[int, ...] = ()
    """Per graph: bytes the other graphs hold while it runs."""
    predicted_peak: int | None = None
    recompute_flops: int = 0
    recompute_time_s: float = 0.0
    saved_bytes: int = 0
    status: str = "infeasible"
    gap: float | None = None
    solve_s: float = 0.0
    recomputed: tuple[ModuleRecompute, ...] = ()
    message: str | None = None
    floor_hint: int | None = None
    """Infeasible: the lowest step peak the solver found (a budget this high is feasible)."""


@dataclass(frozen=True)
class Analysis:
    target: str
    step: CapturedStep
    keep_all_peak: int
    keep_all_time_s: float
    floor: int
    floor_proven: bool
    bytes: ModelBytes
    breakdown: PeakBreakdown
    budgets: tuple[BudgetResult, ...]
    curve: tuple[BudgetResult, ...]
    """The trade-off samples of the chosen solver."""
    sqrt_curve: tuple[BudgetResult, ...]
    """The sqrt(n) heuristic at the same sampled budgets."""
    options: AnalysisOptions
    analyze_s: float
    measured: Measurements | None = None
    """Real steps (--measure, --compare-torch), added by remat.analysis.measured."""

    def overhead(self, result: BudgetResult) -> float | None:
        """Estimated recompute time as a fraction of the keep-all step's time."""
        if not result.feasible:
            return None
        return result.recompute_time_s / self.keep_all_time_s if self.keep_all_time_s else 0.0


def accepts_time_limit(solver: str) -> bool:
    """Whether `solver` takes a time limit (sqrt, lazy and none have none: they are fast)."""
    try:
        get_solver(solver, time_limit=1.0)
    except TypeError:
        return False
    return True


def solver_for(name: str, time_limit: float | None) -> Callable[[Any, int], Plan]:
    """`solve(graph, budget)` with `name`, passing the time limit where the solver takes one."""
    if time_limit is None or not accepts_time_limit(name):
        return get_solver(name).solve
    return get_solver(name, time_limit=time_limit).solve


def evaluate_budget(
    step: CapturedStep, label: str, budget: int, solver: str, time_limit: float | None
) -> BudgetResult:
    started = time.perf_counter()
    try:
        plans = plan_step(step, budget, solver_for(solver, time_limit))
    except InfeasibleBudgetError as error:
        elapsed = time.perf_counter() - started
        return BudgetResult(
            label,
            budget,
            False,
            solver,
            message=str(error),
            solve_s=elapsed,
            floor_hint=error.floor,
        )
    return _summarize(step, label, budget, solver, plans, time.perf_counter() - started)


def _summarize(
    step: CapturedStep,
    label: str,
    budget: int,
    solver: str,
    plans: tuple[Plan, ...],
    solve_s: float,
) -> BudgetResult:
    runs, flops = Counter(), Counter()
    saved = 0
    for item, plan in zip(step.graphs, plans):
        graph = item.captured.graph
        saved += simulation_of(graph, plan).saved_bytes
        for op_id, count in Counter(plan.schedule).items():
            if count > 1:
                module = graph.ops[op_id].module_path or TOP_LEVEL
                runs[module] += count - 1
                flops[module] += (count - 1) * graph.ops[op_id].flops
    recomputed = tuple(
        ModuleRecompute(module, count, flops[module])
        for module, count in sorted(runs.items(), key=lambda kv: (-flops[kv[0]], -kv[1], kv[0]))
    )
    return BudgetResult(
        label=label,
        budget_bytes=budget,
        feasible=True,
        solver=solver,
        plans=plans,
        held=held_bytes(step, plans),
        predicted_peak=step_peak(step, plans),
        recompute_flops=sum(plan.recompute_flops for plan in plans),
        recompute_time_s=sum(plan.recompute_time for plan in plans),
        saved_bytes=saved,
        status=step_status(plans).value,
        gap=step_gap(plans),
        solve_s=solve_s,
        recomputed=recomputed,
    )


def step_floor(step: CapturedStep, time_limit: float) -> tuple[int, bool]:
    """(lowest step peak found, proven): each graph at its floor plan, others' holds added."""
    floors = [find_floor(g.captured.graph, time_limit) for g in step.graphs]
    plans = tuple(floor.plan for floor in floors)
    proven = len(floors) == 1 and floors[0].proven
    return step_peak(step, plans), proven


def sample_budgets(floor: int, keep_all: int, count: int) -> list[int]:
    """`count` budgets evenly spaced from the floor to the keep-all peak, both included."""
    if count <= 0:
        return []
    if count == 1 or keep_all <= floor:
        return [keep_all]
    return sorted({floor + (keep_all - floor) * k // (count - 1) for k in range(count)})


def analyze(
    target: Target, options: AnalysisOptions, progress: ProgressFn | None = None
) -> Analysis:
    """Capture `target`'s training step and report it at every budget of `options`."""
    started = time.perf_counter()
    say = progress or (lambda label, done, total: None)
    total = 2 + len(options.budgets) + 2 * options.samples
    say("capturing the training step", 0, total)
    step = capture_step(target.model, target.args, target.kwargs)
    keep_all = step.keep_all_peak
    say("finding the floor", 1, total)
    floor, proven = step_floor(step, options.floor_time_limit)
    done = 2
    budgets = []
    for label, budget in options.budgets:
        say(f"solving budget {label}", done, total)
        budgets.append(
            evaluate_budget(
                step, label, budget.resolve(keep_all), options.solver, options.time_limit
            )
        )
        done += 1
    curve, sqrt_curve = [], []
    for budget in sample_budgets(floor, keep_all, options.samples):
        say(f"trade-off curve: {budget} bytes", done, total)
        curve.append(
            evaluate_budget(step, "sample", budget, options.solver, options.sample_time_limit)
        )
        sqrt_curve.append(evaluate_budget(step, "sample", budget, "sqrt", None))
        done += 2
    found = [
        r.predicted_peak if r.feasible else r.floor_hint for r in (*budgets, *curve, *sqrt_curve)
    ]
    found = [peak for peak in found if peak is not None]
    if found and min(found) < floor:
        floor, proven = min(found), False
    say("done", total, total)
    inputs = [x for x in (*target.args, *target.kwargs.values()) if hasattr(x, "element_size")]
    return Analysis(
        target=target.description,
        step=step,
        keep_all_peak=keep_all,
        keep_all_time_s=step.keep_all_time,
        floor=floor,
        floor_proven=proven,
        bytes=model_bytes(target.model, inputs, step),
        breakdown=peak_breakdown(step),
        budgets=tuple(budgets),
        curve=tuple(curve),
        sqrt_curve=tuple(sqrt_curve),
        options=options,
        analyze_s=time.perf_counter() - started,
    )
