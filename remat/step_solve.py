"""Plan a step's graphs together for a budget (no torch): remat.step_graph's combine, solve,
split and join, with retries, the per-graph-checkpointing candidate and the whole step's
floor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from remat.budget import InfeasibleBudgetError
from remat.ir import Plan, RematGraph
from remat.simulate import Simulation, simulate
from remat.solvers import find_floor, solve
from remat.solvers._common import make_plan
from remat.step_graph import StepGraph, _join, combine, join, split
from remat.step_links import StepLink

MAX_RETRIES = 3
"""Solves after the first that `plan_step` tries with a tighter budget when the per-graph plans
run over (recomputations `split` moved); then it falls back to the floor plan or raises."""


@dataclass(frozen=True)
class StepPlanResult:
    """The step planned whole: what each graph runs, and what the step then peaks at."""

    step: StepGraph
    plans: tuple[Plan, ...]
    """Per graph, in step order: the plans the per-graph rewriter runs."""
    combined: Plan
    """The solver's plan of `step.graph`. Its peak is the solver's; `peak` is what runs."""
    simulation: Simulation
    """The per-graph plans joined into the step and replayed on `step.graph`."""
    budget: int
    floor: int | None
    """The whole step's floor (peak of the lowest plan found, as run per graph); None when not
    asked for. It does not depend on the budget."""
    solved_budgets: tuple[int, ...]
    """Budgets the combined graph was solved for: the asked one, then tighter retries."""

    @property
    def peak(self) -> int:
        """Simulated peak of the step the per-graph plans run (<= budget)."""
        return self.simulation.peak


@dataclass(frozen=True)
class _Candidate:
    combined: Plan
    plans: tuple[Plan, ...]
    simulation: Simulation


def plan_step(
    graphs: Sequence[RematGraph],
    budget: int,
    solver: str = "auto",
    *,
    carried: int = 0,
    links: Sequence[StepLink] = (),
    with_floor: bool = True,
    floor_time_limit: float = 10.0,
    **config: object,
) -> StepPlanResult:
    """Plan a step's graphs together so the step, run graph by graph, peaks at <= `budget`.

    Solves the combined graph, splits the plan per graph and replays the joined step. If moved
    recomputations (see `split`) push it over the budget, solves again for the budget less the
    excess, at most MAX_RETRIES times; then takes the floor plan if it fits, else raises
    InfeasibleBudgetError with the whole step's floor (`find_floor` on the combined graph, as
    run per graph; it does not depend on `budget`). `with_floor=False` skips the floor search
    (up to `floor_time_limit` seconds) when the budget is met. `links`: see `combine`.
    `config` goes to the solver.
    """
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int number of bytes, got {budget!r}")
    step = combine(graphs, carried, links)
    structured = _checkpoint_each_graph(step)
    tried: list[int] = []
    target = budget
    while len(tried) <= MAX_RETRIES and target > 0:
        tried.append(target)
        try:
            candidate = _candidate(step, solve(step.graph, target, solver, **config))
        except InfeasibleBudgetError:
            break
        if candidate.simulation.peak <= budget:
            floor = _floor(step, floor_time_limit, structured) if with_floor else None
            if _cheaper_within(structured, candidate, budget):
                candidate = structured
            return _result(step, candidate, budget, floor, tried)
        target -= max(1, candidate.simulation.peak - budget)
    lowest = _lowest(step, floor_time_limit, structured)
    if lowest.simulation.peak <= budget:
        chosen = structured if _cheaper_within(structured, lowest, budget) else lowest
        return _result(step, chosen, budget, lowest.simulation.peak, tried)
    raise InfeasibleBudgetError(
        budget,
        lowest.simulation.peak,
        f"the whole step of {len(graphs)} graphs planned together; lowest peak found",
    )


def _checkpoint_each_graph(step: StepGraph) -> _Candidate:
    """What per-block checkpointing runs, as a step plan: each graph keeps its inputs and the
    values it cannot recompute, and runs its forward again at the start of its backward."""
    plans = []
    for k, graph in enumerate(step.graphs):
        forward = tuple(range(graph.boundary))
        again = tuple(i for i in forward if step.graph.ops[step.op_ids[k][i]].recomputable)
        backward = tuple(range(graph.boundary, len(graph.ops)))
        schedule = (*forward, *again, *backward) if backward else forward
        plans.append(make_plan(graph, schedule, graph.boundary, solver="checkpoint each graph"))
    combined = make_plan(step.graph, *_join(step, [(p.schedule, p.boundary) for p in plans]),
                         solver="checkpoint each graph")  # fmt: skip
    return _Candidate(combined, tuple(plans), combined.simulation)


def _cheaper_within(a: _Candidate, b: _Candidate, budget: int) -> bool:
    """Whether `a` fits `budget` and recomputes less than `b`."""
    return a.simulation.peak <= budget and a.simulation.recompute_time < b.simulation.recompute_time


def _candidate(step: StepGraph, combined: Plan) -> _Candidate:
    plans = split(step, combined)
    return _Candidate(combined, plans, simulate(step.graph, *join(step, plans)))


def _lowest(step: StepGraph, time_limit: float, structured: _Candidate) -> _Candidate:
    """The floor plan of the combined graph, as the per-graph plans run it (per-graph
    checkpointing among the candidates)."""
    found = _candidate(step, find_floor(step.graph, time_limit, extra=(structured.combined,)).plan)
    return min((found, structured), key=lambda c: c.simulation.peak)


def _floor(step: StepGraph, time_limit: float, structured: _Candidate) -> int:
    return _lowest(step, time_limit, structured).simulation.peak


def _result(
    step: StepGraph, candidate: _Candidate, budget: int, floor: int | None, tried: list[int]
) -> StepPlanResult:
    return StepPlanResult(
        step=step,
        plans=candidate.plans,
        combined=candidate.combined,
        simulation=candidate.simulation,
        budget=budget,
        floor=floor,
        solved_budgets=tuple(tried),
    )
