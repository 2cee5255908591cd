"""Running CP-SAT on a RetentionModel: parameters, progress lines, the decoded result."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ortools.sat.python import cp_model

from remat.solvers.ilp_decode import add_hint, decode
from remat.solvers.ilp_model import RetentionModel

_PRESOLVE_SECONDS_PER_VARIABLE = 2e-4
"""Roughly what CP-SAT's presolve costs per model variable on these models (2-core machine)."""


class SearchConfig(Protocol):
    workers: int
    seed: int


@dataclass(frozen=True)
class CpSatRun:
    status: str
    schedule: tuple[int, ...] | None
    boundary: int
    objective: int | None
    """Objective of the solution, in model units (cost units or memory units)."""
    bound: float | None
    """CP-SAT's proven bound on the objective, in model units."""
    wall_s: float
    notes: tuple[str, ...] = ()

    @property
    def optimal(self) -> bool:
        return self.status == "OPTIMAL"


class _Reporter(cp_model.CpSolverSolutionCallback):
    def __init__(self, say: Callable[[str], None], label: str) -> None:
        super().__init__()
        self.say, self.label, self.count = say, label, 0
        self.start = time.perf_counter()

    def on_solution_callback(self) -> None:
        self.count += 1
        self.say(
            f"cp-sat {self.label}: solution {self.count}, objective {self.objective_value:.6g}, "
            f"bound {self.best_objective_bound:.6g}, {time.perf_counter() - self.start:.1f} s"
        )


def run_cpsat(
    built: RetentionModel,
    config: SearchConfig,
    time_limit: float,
    hint: Sequence[int] | None,
    say: Callable[[str], None],
) -> CpSatRun:
    """Solve `built` within `time_limit` seconds; decode the best solution found."""
    label = "peak" if built.peak is not None else "cost"
    hinted = hint is not None and add_hint(built, hint)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit)
    solver.parameters.num_workers = config.workers
    solver.parameters.random_seed = config.seed
    solver.parameters.log_search_progress = False
    solver.parameters.cp_model_probing_level = 0  # probing dominates presolve on big models
    size = len(built.model.proto.variables)
    if size * _PRESOLVE_SECONDS_PER_VARIABLE > time_limit / 2:
        solver.parameters.cp_model_presolve = False  # it would eat the time the search needs
    start = time.perf_counter()
    status = solver.solve(built.model, _Reporter(say, label))
    wall = time.perf_counter() - start
    name = solver.status_name(status)
    say(f"cp-sat {label}: {name} in {wall:.2f} s" + (" (hinted)" if hinted else ""))
    notes = (f"cp-sat {label}: {name}, {wall:.2f} s",)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = None if status != cp_model.INFEASIBLE else float("inf")
        return CpSatRun(name, None, 0, None, bound, wall, notes)
    schedule, boundary = decode(built, solver.value)
    return CpSatRun(
        status=name,
        schedule=schedule,
        boundary=boundary,
        objective=round(solver.objective_value),
        bound=solver.best_objective_bound,
        wall_s=wall,
        notes=notes,
    )
