"""`ilp`: the retention-interval CP-SAT model, warm-started and checked by the simulator.

Flow, within `time_limit` seconds of wall clock (building the models and replaying the result
included):
1. heuristics (heuristics.py): keep-all, the lazy, sqrt and structured families, repeated blocks
   solved once (template.py), eviction and splitting;
2. the gap relaxation (bound.py): a lower bound valid for any number of recomputations (two
   models solved at once, on two threads), and plans made from its solutions (guided.py; a
   plan that meets the bound is optimal and the search stops there); on graphs with repeated
   blocks it runs right after the template search, before eviction and splitting;
3. local search (local.py) from the best plan within the budget (on big graphs, several
   chains from the cheapest distinct plans, with most of the time: see _BIG_READS);
4. CP-SAT on the retention-interval model (ilp_model.py), hinted with the best plan it can
   express; its schedule is replayed in the simulator, and if the peak overshoots (a model
   mismatch) the capacity shrinks and CP-SAT runs again; after an optimal solve, leftover time
   picks the lowest peak among plans of that cost (a lower budget never gets a higher peak).
The result is the cheapest simulated plan within the budget among all of these, so it is never
worse than sqrt's where sqrt fits. Its lower bound is the larger of the relaxation's and
CP-SAT's (the latter holds for the model: at most `copies` executions per op, first executions
in the reference order).

Determinism: with workers=1 and a fixed seed, a run that ends by proving optimality or by the
local search's patience is deterministic; a run stopped by the wall clock (big graphs) may
differ from one run to the next, and so may any run with several CP-SAT workers. Tests use
workers=1 on graphs that are solved to optimality.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from remat.ir import Plan, PlanStatus, RematGraph
from remat.solvers._common import (
    confirmed_best,
    lowest_peak,
    make_plan,
    plan_order,
    reaches_bound,
)
from remat.solvers.base import ProgressCallback, register
from remat.solvers.bound import Solved, solve_relaxation, terms_for
from remat.solvers.cpsat import CpSatRun, run_cpsat
from remat.solvers.floor import floor_or_raise
from remat.solvers.guided import guided_plans
from remat.solvers.heuristics import budget_plans, first_plans
from remat.solvers.ilp_decode import representable
from remat.solvers.ilp_model import RetentionModel
from remat.solvers.ilp_problem import Problem, build_problem
from remat.solvers.local import improve
from remat.solvers.template import find_templates

logger = logging.getLogger(__name__)

_HEURISTIC_SHARE = 0.3
"""Share of the time limit after which the heuristics stop splitting and pruning."""
_TEMPLATE_SHARE = 0.4
"""Share of the time limit the search over repeated blocks may take (template.py): its plans
are the best warm starts far below the keep-all peak (HF GPT-2, 12 blocks: a third of the
recompute of the rest at half of it), so it runs first."""
_BOUND_SHARE = 0.15
"""Share of the time limit the gap relaxation's bound may take (bound.py)."""
_BOUND_SHARE_TEMPLATED = 0.4
"""The share on graphs with repeated blocks (HF GPT-2, 48 layers at 0.7 of keep-all: 0.04% of
the step proven in 3 s, 0.94% in 6 s; 96 layers needs ~9 s besides building)."""
_BOUND_MAX_S = 12.0
_BOUND_OF_LEFT = 0.8
"""Most of the time left that the relaxation may take when the heuristics ran long."""
_SPLIT_FIRST_FROM = 0.8
"""With repeated blocks, from this fraction of the keep-all peak up, eviction, shaving and
splitting run before the relaxation, for at least _SPLIT_LEAST_SHARE of the limit: splitting
from keep-all finds the plans near it (HF GPT-2, 48 layers at 0.9: 0.3% of the step). Below,
the relaxation's plans are the ones to beat (0.7: 1.0%, the template's 4.9%), so it runs first
and the others get at most _SPLIT_LEAST_SHARE of the limit and _SPLIT_OF_LEFT of what is left."""
_SPLIT_LEAST_SHARE = 0.3
_SPLIT_OF_LEFT = 0.5
_GUIDED_SHARE = 0.6
"""Share of the time left that plans from the relaxation's solutions may take (guided.py)."""
_LOCAL_SHARE = 0.4
"""Share of the time left that local search may take before CP-SAT."""
_LOCAL_SHARE_BIG = 0.75
_BIG_READS = 800
"""From this many reads (edges), local search takes _LOCAL_SHARE_BIG: on the random layered
graphs of 250 to 1000 nodes (944 to 5875 edges) CP-SAT improved on the local search's plan in
none of our runs (60 s, two workers), while more chains from other starts did; ResNet50 (751
edges) still needs CP-SAT's time to prove its plan optimal. A threshold tuned on those graphs."""
_LOCAL_CHAINS = 4
"""Local search chains (seeds) at most on big graphs; one on the others, where CP-SAT does
better with the time (random_layered_n100 at 0.8: optimal in 54 s after 4 chains, 9 s after 1)."""
_REACH_SHARE = 0.5
"""Most of the remaining time the search for a first plan within the budget may take."""
_BUILD_S_PER_READ = 2e-4
"""Seconds per read (edge) to build a retention model (1.1e-4 measured, doubled for load)."""
_WRAP_UP_SHARE = 0.05
_WRAP_UP_MAX_S = 1.5
"""Time kept back for what follows the last search (decoding, replay): the limit covers all."""


@dataclass(frozen=True, kw_only=True)
class IlpConfig:
    time_limit: float = 30.0
    """Seconds of wall clock for the whole solve (heuristics, model building and CP-SAT)."""
    workers: int = 1
    """CP-SAT search workers (threads); more than one makes time-limited runs nondeterministic."""
    copies: int = 2
    """Executions allowed per op in the model: 2 = recompute at most once, 3 = twice."""
    local_copies: int | None = None
    """Executions per op the local search may use (None: `copies`). More than `copies` finds
    cheaper plans on graphs too big for CP-SAT to improve in time (random_layered_n250 at 0.8:
    4.76% overhead with 5, 5.02% with 3), plans CP-SAT cannot then be hinted with."""
    seed: int = 0
    """CP-SAT's random seed."""
    recompute_backward: bool = False
    """Let the model recompute backward ops too (graphs with a backward part)."""
    hint: bool = True
    """Warm-start CP-SAT with the best heuristic plan that fits."""
    local_search: bool = True
    """Improve the best heuristic plan by local search before CP-SAT (local.py)."""
    templates: bool = True
    """Search plans alike over repeated blocks first (template.py); off for comparisons."""
    tie_break: bool = True
    """After an optimal solve, spend leftover time finding the lowest peak at that cost."""
    retries: int = 2
    """Times to shrink the capacity and solve again when a plan overshoots in the simulator."""
    progress: ProgressCallback | None = None
    """Receives one status line per CP-SAT solution and per phase."""

    def __post_init__(self) -> None:
        if not self.time_limit > 0:
            raise ValueError(f"ilp: time_limit must be > 0 seconds, got {self.time_limit}")
        if self.workers < 1:
            raise ValueError(f"ilp: workers must be >= 1, got {self.workers}; try 1 or 2")
        if self.copies < 1:
            raise ValueError(f"ilp: copies must be >= 1 (1 = never recompute), got {self.copies}")
        if self.local_copies is not None and self.local_copies < self.copies:
            raise ValueError(
                f"ilp: local_copies must be None or >= copies ({self.copies}), "
                f"got {self.local_copies}"
            )
        if self.retries < 0:
            raise ValueError(f"ilp: retries must be >= 0, got {self.retries}")


@register("ilp")
class IlpSolver:
    """Min recompute time under the budget, by CP-SAT over retention intervals."""

    name = "ilp"

    def __init__(self, **config: object) -> None:
        self.config = IlpConfig(**config)  # type: ignore[arg-type]

    def _say(self, line: str) -> None:
        logger.debug(line)
        if self.config.progress is not None:
            self.config.progress(line)

    def solve(self, graph: RematGraph, budget: int) -> Plan:
        start = time.perf_counter()
        limit = self.config.time_limit
        deadline = start + limit - min(_WRAP_UP_SHARE * limit, _WRAP_UP_MAX_S)
        heuristics = first_plans(
            graph, budget, start + (_TEMPLATE_SHARE * limit if self.config.templates else 0.0)
        )
        templated = self.config.templates and bool(find_templates(graph))
        near = budget >= _SPLIT_FIRST_FROM * heuristics[0].predicted_peak  # keep-all's
        if not templated or near:
            least = _SPLIT_LEAST_SHARE * limit if templated else 0.0
            until = max(start + _HEURISTIC_SHARE * limit, time.perf_counter() + least)
            heuristics += budget_plans(graph, budget, self.config.copies, until)
        warm = confirmed_best(graph, heuristics, budget)
        self._say(
            f"heuristics: {len(heuristics)} plans, best within budget: "
            + (f"{warm.recompute_time:.6g} s recompute" if warm else "none")
        )
        solved = self._relaxed(graph, budget, limit, deadline)
        relaxed = None if solved is None else solved.bound
        if solved is not None:
            until = time.perf_counter() + _GUIDED_SHARE * (deadline - time.perf_counter())
            heuristics += guided_plans(
                graph, budget, solved, warm, self.config.copies, self.config.workers, until,
                self._say,
            )  # fmt: skip
        warm = confirmed_best(graph, heuristics, budget)
        if templated and not near and not reaches_bound(warm, relaxed):
            left = deadline - time.perf_counter()
            until = time.perf_counter() + min(_SPLIT_LEAST_SHARE * limit, _SPLIT_OF_LEFT * left)
            heuristics += budget_plans(graph, budget, self.config.copies, until)
            warm = confirmed_best(graph, heuristics, budget)
        problem = build_problem(graph, self.config.copies, self.config.recompute_backward)
        run, exact = None, None
        if relaxed is not None and not reaches_bound(warm, relaxed):
            if warm is None:
                warm = self._reach(problem, budget, heuristics, deadline)
            warm = self._local(graph, budget, warm, heuristics, relaxed, deadline)
            fitting = [p for p in heuristics if p.predicted_peak <= budget]
            starts = sorted([*fitting, *([warm] if warm else [])], key=plan_order)
            run, exact = self._search(problem, budget, starts, deadline)
        candidates = [plan for plan in (exact, warm) if plan is not None]
        best = min(candidates, key=plan_order) if candidates else None
        if best is None:
            floor_plan = floor_or_raise(graph, budget, heuristics, deadline)
            best = replace(floor_plan, status=PlanStatus.HEURISTIC)
        bounds = (relaxed, self._model_bound(run, problem))
        return self._finish(best, run, bounds, budget, time.perf_counter() - start)

    def _local(
        self,
        graph: RematGraph,
        budget: int,
        warm: Plan | None,
        others: list[Plan],
        bound: float,
        deadline: float,
    ) -> Plan | None:
        """Improve the cheapest plans within the budget by local search (local.py) for a share
        of the time left: one chain from each of the _LOCAL_CHAINS cheapest distinct plans (a
        new seed each; they end in different local optima), sharing that time, the best kept."""
        if warm is None or not self.config.local_search:
            return warm
        fitting = sorted((p for p in others if p.predicted_peak <= budget), key=plan_order)
        distinct = list({p.schedule: p for p in [*reversed(fitting), warm]}.values())[::-1]
        big = sum(len(op.inputs) for op in graph.ops) >= _BIG_READS
        share = _LOCAL_SHARE_BIG if big else _LOCAL_SHARE
        until = time.perf_counter() + share * (deadline - time.perf_counter())
        copies = self.config.local_copies or self.config.copies
        best = warm
        chains = distinct[: _LOCAL_CHAINS if big else 1]
        for chain, start in enumerate(chains):
            now = time.perf_counter()
            if now >= until or reaches_bound(best, bound):
                break
            found = improve(
                graph, budget, (start.schedule, start.boundary), copies,
                now + (until - now) / (len(chains) - chain), self.config.seed + chain,
                self._say, bound,
            )  # fmt: skip
            plan = make_plan(graph, *found, solver=self.name, notes=("local search",))
            if plan.predicted_peak <= budget and plan_order(plan) < plan_order(best):
                best = plan
        return best

    def _relaxed(
        self, graph: RematGraph, budget: int, limit: float, deadline: float
    ) -> Solved | None:
        """The gap relaxation (bound.py); None when it proves the budget infeasible. Its share
        shrinks when the heuristics ran long, to most of what is left (at least _BOUND_SHARE)."""
        share = _BOUND_SHARE_TEMPLATED if find_templates(graph) else _BOUND_SHARE
        left = _BOUND_OF_LEFT * (deadline - time.perf_counter())
        seconds = min(share * limit, _BOUND_MAX_S, max(_BOUND_SHARE * limit, left))
        found = solve_relaxation(graph, budget, seconds, self.config.workers, terms_for(seconds))
        line = "infeasible" if found is None else f"bound {found.bound:.6g} s"
        self._say(f"relaxation: {line}")
        return found

    @staticmethod
    def _model_bound(run: CpSatRun | None, problem: Problem) -> float | None:
        if run is None or run.bound is None or run.bound == float("inf"):
            return None
        return problem.seconds(run.bound)

    def _reach(
        self, problem: Problem, budget: int, heuristics: list[Plan], deadline: float
    ) -> Plan | None:
        """A first plan within the budget when no heuristic has one: CP-SAT minimising the
        excess of the peak over the budget, from the lowest-peak heuristic plan."""
        until = time.perf_counter() + (deadline - time.perf_counter()) * _REACH_SHARE
        if until - time.perf_counter() <= _build_seconds(problem):
            return None
        built = RetentionModel(problem, problem.capacity(budget), minimize="reach")
        left = until - time.perf_counter()
        if left <= 0.05:
            return None
        run = run_cpsat(built, self.config, left, lowest_peak(heuristics).schedule, self._say)
        if run.schedule is None:
            return None
        plan = make_plan(problem.graph, run.schedule, run.boundary, solver=self.name)
        if plan.predicted_peak > budget:
            # Short of the budget, it is still a peak reached: a floor never stands above it.
            heuristics.append(plan)
            return None
        return plan

    def _search(
        self, problem: Problem, budget: int, starts: list[Plan], deadline: float
    ) -> tuple[CpSatRun | None, Plan | None]:
        """CP-SAT at the budget; retried with less capacity if the simulator disagrees.

        Returns the first run (its bound is the one valid at the budget; it counts as optimal
        only if its own plan was accepted) and the accepted plan.
        """
        capacity = problem.capacity(budget)
        first: CpSatRun | None = None
        for attempt in range(self.config.retries + 1):
            left = deadline - time.perf_counter()
            if left <= _build_seconds(problem) or capacity < 0:
                break
            built = RetentionModel(problem, capacity)
            hint = _first_representable(built, starts) if self.config.hint else None
            left = deadline - time.perf_counter()  # building the model took some of it
            if left <= 0.05:
                break
            run = run_cpsat(built, self.config, left, hint, self._say)
            first = first or run
            if run.schedule is None:
                break
            plan = make_plan(problem.graph, run.schedule, run.boundary, solver=self.name)
            if plan.predicted_peak <= budget:
                if run is not first:
                    first = replace(first, status="FEASIBLE")
                return first, self._tie_break(problem, run, plan, budget, deadline)
            excess = plan.predicted_peak - budget
            self._say(f"attempt {attempt}: simulated peak over budget by {excess} B; shrinking")
            capacity -= -(-excess // problem.mem_unit)
        if first is not None and first.optimal:
            first = replace(first, status="FEASIBLE")
        return first, None

    def _tie_break(
        self, problem: Problem, run: CpSatRun, plan: Plan, budget: int, deadline: float
    ) -> Plan:
        """Among plans as cheap as an optimal one, the one with the lowest peak."""
        left = deadline - time.perf_counter()
        if not (self.config.tie_break and run.optimal and left > _build_seconds(problem)):
            return plan
        built = RetentionModel(
            problem, problem.capacity(budget), minimize="peak", max_cost=run.objective
        )
        left = deadline - time.perf_counter()
        if left <= 0.05:
            return plan
        second = run_cpsat(built, self.config, left, plan.schedule, self._say)
        if second.schedule is None:
            return plan
        other = make_plan(problem.graph, second.schedule, second.boundary, solver=self.name)
        fits = other.predicted_peak <= budget
        return min((plan, other), key=plan_order) if fits else plan

    def _finish(
        self,
        plan: Plan,
        run: CpSatRun | None,
        bounds: tuple[float | None, float | None],
        budget: int,
        seconds: float,
    ) -> Plan:
        relaxed, model = bounds
        known = [b for b in bounds if b is not None]
        bound = min(max(known), plan.recompute_time) if known else None
        proven = run is not None and run.optimal and model is not None
        optimal = proven or reaches_bound(plan, relaxed)
        if optimal and bound is not None and reaches_bound(plan, bound):
            status = PlanStatus.OPTIMAL
        elif bound is not None:
            status = PlanStatus.FEASIBLE
        else:
            status = PlanStatus.HEURISTIC
        notes = (*plan.notes, *(run.notes if run is not None else ()))
        return replace(
            plan,
            solver=self.name,
            status=status,
            budget=budget,
            lower_bound=bound,
            solve_s=seconds,
            notes=notes,
        )


def _build_seconds(problem: Problem) -> float:
    """Time to build a CP-SAT model of `problem`, with margin: not started with less left (HF
    GPT-2, 96 layers, 21k reads: 2.3 s to build, which once ran a 30 s solve to 39 s)."""
    return 0.05 + _BUILD_S_PER_READ * sum(len(reads) for reads in problem.reads)


def _first_representable(built: RetentionModel, plans: list[Plan]) -> tuple[int, ...] | None:
    """The first plan the model can express completely (a feasible warm start), if any."""
    for plan in plans:
        if representable(built, plan.schedule):
            return plan.schedule
    return None
