"""A lower bound on the recompute time at a budget: the gap relaxation.

In the reference order, every stored value lives from its production through a series of gaps
between consecutive reads. At the mandatory execution of op j, a value in the middle of one of its
gaps is in memory unless that gap is "dropped", and each dropped gap needs its own production of
the value (a production serves the reads after it until the next one), so it costs one execution
of the producer. The values op j reads, its outputs and its transient bytes are in memory at j
whatever the plan. Choosing the dropped gaps so that every step fits the budget, at least cost, is
a covering problem much smaller than the scheduling model. What a recomputation itself needs is
counted only in part (a chain of inputs the reference order has let die, held or made again:
bound_inputs.py; not what the recomputation holds while it runs), so it stays a relaxation: its
optimum, and CP-SAT's bound on it, bound the recompute time of every plan (any number of
recomputations) from below.

It also gives the floor a lower bound: no plan's peak is below the largest fixed demand of a step.
"""

from __future__ import annotations

import bisect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ortools.sat.python import cp_model

from remat.ir import RematGraph
from remat.solvers.bound_inputs import CHAIN_DEPTH, input_terms
from remat.solvers.gaps import Gap, Relaxation, alike_gaps, with_storages
from remat.solvers.ilp_problem import Problem, build_problem
from remat.solvers.template import find_templates


def relaxation(graph: RematGraph) -> Relaxation:
    """The gaps of every stored value and the fixed demand of every step.

    Every recomputable op may be recomputed here, backward ops included (heuristics do), so the
    bound holds for every plan, not only for the ILP model's.
    """
    problem = build_problem(graph, copies=2, recompute_backward=True)
    count, boundary = len(graph.ops), graph.boundary
    reads: dict[int, list[int]] = {}
    for op in graph.ops:
        for tensor in problem.reads[op.id]:
            reads.setdefault(tensor, []).append(op.id)
    for tensor in with_storages(graph, graph.outputs):
        reads.setdefault(tensor, []).append(count)
    fixed = [0] * (count + 1)
    for op in graph.ops:
        demand = problem.transient[op.id] + sum(problem.size[t] for t in op.outputs)
        fixed[op.id] = demand + sum(problem.size[t] for t in problem.reads[op.id])
    fixed[count] = problem.reserve + problem.backward_reserve
    for position in range(boundary, count):
        fixed[position] += problem.backward_reserve
    if boundary < count:
        fixed[count] += sum(problem.size[t] for t in graph.late_inputs)
    late_last = {t: max(reads.get(t, [boundary])) for t in graph.late_inputs}
    for tensor, last in late_last.items():
        for position in range(boundary, min(last, count)):
            if tensor not in problem.reads[position]:
                fixed[position] += problem.size[tensor]
    gaps = []
    pinned = with_storages(graph, graph.forward_outputs)
    for tensor in range(len(graph.tensors)):
        producer = graph.tensors[tensor].producer
        if producer is None or not problem.size[tensor]:
            continue
        marks = sorted({producer, *reads.get(tensor, [])})
        for after, before in zip(marks, marks[1:]):
            gap = Gap(tensor, producer, after, before, problem.size[tensor])
            if tensor in pinned and before >= boundary:
                gap = _pin_from_boundary(fixed, gap, boundary, count)
                if gap is None:
                    continue
            if _droppable(graph, problem, gap):
                gaps.append(gap)
            else:
                _add_fixed(fixed, gap, boundary, count)
    return Relaxation(tuple(gaps), tuple(fixed), problem)


def _pin_from_boundary(fixed: list[int], gap: Gap, boundary: int, count: int) -> Gap | None:
    """A gap of a forward output (or of the storage it views) reaching the backward: from the
    boundary on, the instance the forward returned is held in every plan, so that part is fixed;
    before it the value may still be made again (the ILP allows it), so the forward part, if
    any, stays a gap, one that is not held at the boundary."""
    for position in range(max(gap.after + 1, boundary), gap.before):
        fixed[position] += gap.size
    if gap.after < boundary:
        fixed[count] += gap.size
        return Gap(gap.tensor, gap.producer, gap.after, boundary, gap.size, holds_boundary=False)
    return None


def _droppable(graph: RematGraph, problem: Problem, gap: Gap) -> bool:
    if problem.copies[gap.producer] < 2:
        return False
    return gap.before - gap.after > 1 or gap.spans(graph.boundary)


def _add_fixed(fixed: list[int], gap: Gap, boundary: int, count: int) -> None:
    for position in range(gap.after + 1, gap.before):
        fixed[position] += gap.size
    if gap.spans(boundary):
        fixed[count] += gap.size


@dataclass(frozen=True)
class Solution:
    """One model's best solution: a hint where to recompute (empty if none was found)."""

    dropped: tuple[Gap, ...]
    remade: tuple[tuple[int, int], ...] = ()
    """(position, producer): inputs made again for a recomputation before the read at
    `position` rather than held (the chains of bound_inputs.py)."""


@dataclass(frozen=True)
class Solved:
    bound: float
    """Seconds of recompute every plan within the budget needs."""
    solutions: tuple[Solution, ...]
    """The first model's, then the second's (guided.py tries first those whose schedules
    replay cheapest). The more of what a recomputation
    holds a model counts, the closer its solution's schedule is to fitting as it is (HF GPT-2,
    24 layers at 0.7 of keep-all: a one-level model's overshot the budget by 13% when
    replayed, the deep chains' gave a plan recomputing 2.5% of the step; 48 layers at 0.5:
    without siblings 2.4% over, with them within the budget)."""


_TERMS_PER_S = 50_000
"""Coefficients the relaxation may have per second it is given (building it takes time too)."""


def terms_for(seconds: float) -> int:
    """The `max_terms` a relaxation given `seconds` may build."""
    return int(min(max(_TERMS_PER_S * seconds, 5_000), 400_000))


def lower_bound(
    graph: RematGraph,
    budget: int,
    time_limit: float = 5.0,
    workers: int = 1,
    max_terms: int = 200_000,
) -> float | None:
    """Seconds of recompute every plan within `budget` needs; None if the budget is below the
    relaxation's floor (no plan fits)."""
    solved = solve_relaxation(graph, budget, time_limit, workers, max_terms)
    return None if solved is None else solved.bound


def solve_relaxation(
    graph: RematGraph,
    budget: int,
    time_limit: float = 5.0,
    workers: int = 1,
    max_terms: int = 200_000,
) -> Solved | None:
    """The relaxation's bound and best solution; None if the budget is below its floor.

    Only the steps most over the budget are constrained, up to `max_terms` coefficients (any
    subset of the steps still gives a valid bound, a weaker one). `time_limit` covers building
    the models too. Two CP-SAT solves run at once, `workers` threads each.
    """
    until = time.perf_counter() + time_limit
    relaxed = relaxation(graph)
    capacity = relaxed.problem.capacity(budget)
    if relaxed.floor_units() > capacity:
        return None
    chosen = _worst_steps(relaxed, capacity, graph.boundary, max_terms)
    # Two models, solved side by side on two threads (CP-SAT releases the GIL while it
    # solves), both following chains of dead inputs CHAIN_DEPTH levels down. The first also
    # counts their siblings (tighter: HF GPT-2's causal mask, 12 MiB at 48 layers and half the
    # keep-all peak) and gives the bound. The second is there for its solutions:
    # - on graphs of repeated blocks, the first with the same gap of every block decided alike
    #   (a restriction, so its bound is not one). HF GPT-2, 96 layers at 0.35 of keep-all: its
    #   best, within 1.1% of the bound, came after 9 s and its schedule fits (11.9% of the
    #   step); the first model's, after 30 s, replayed at 16.6% and over the budget.
    # - elsewhere, the first without siblings, whose solutions come sooner (24 layers at 0.35:
    #   within 1% of the bound after 1 s; the first model's first came after 4 s).
    # (A one-level model proved faster under the old search; at linearization level 2 its bound
    # was never the larger and it found no plan the chains' did not: 12-48 layers, 0.35-0.9.)
    templates = find_templates(graph)
    ties = alike_gaps(relaxed, templates[0].classes) if templates else []
    second = _Model(relaxed, capacity, chosen, depth=CHAIN_DEPTH, siblings=bool(ties), ties=ties)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="remat-relaxation") as pool:
        beside = pool.submit(second.solve, until, workers)
        deep = _Model(relaxed, capacity, chosen, depth=CHAIN_DEPTH, siblings=True)
        solved = deep.solve(until, workers)
        other = beside.result()
    if solved is None:
        return None
    solutions = tuple(
        Solution(tuple(relaxed.gaps[i] for i in sorted(s.dropped)), s.remade)
        for s in (solved, other)
        if s is not None
    )
    # The second model's bound is one too unless its gaps are tied.
    bounds = [solved.bound] + ([other.bound] if other is not None and not ties else [])
    return Solved(max(bounds), solutions)


@dataclass(frozen=True)
class _Solved:
    bound: float
    """Seconds (CP-SAT's bound on the model)."""
    dropped: frozenset[int]
    remade: tuple[tuple[int, int], ...]


class _Model:
    """The relaxation at one capacity as a CP-SAT model, following chains `depth` levels."""

    def __init__(
        self,
        relaxed: Relaxation,
        capacity: int,
        chosen: set[int],
        depth: int,
        siblings: bool,
        ties: list[list[int]] | None = None,
    ) -> None:
        self.relaxed = relaxed
        self.model = model = cp_model.CpModel()
        self.dropped = dropped = [model.new_bool_var("") for _ in relaxed.gaps]
        boundary = relaxed.problem.graph.boundary
        inputs = input_terms(model, relaxed, dropped, chosen, depth, siblings)
        self.remade = inputs.remade
        for position, items in _terms(relaxed, dropped, boundary, chosen).items():
            sizes, literals = [size for size, _ in items], [lit for _, lit in items]
            kept = sum(sizes) - cp_model.LinearExpr.weighted_sum(literals, sizes)
            held = sum(inputs.extra.get(position, []))
            model.add(kept + held <= capacity - relaxed.fixed[position])
        for indices in ties or []:
            for index in indices[1:]:
                model.add(dropped[index] == dropped[indices[0]])
        model.minimize(_cost(model, relaxed, dropped) + inputs.cost)

    def solve(self, until: float, workers: int) -> _Solved | None:
        """The bound, the best solution by `until`; None if infeasible."""
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.05, until - time.perf_counter())
        solver.parameters.num_workers = workers
        # The LP with its cuts at every node (linearization level 2): the relaxation's LP is
        # nearly integral, and HF GPT-2 at 12 to 48 layers, 0.35 to 0.9 of keep-all, deep
        # chains, was solved to optimality in 0.1-4.9 s where the default search (interleaved
        # with LNS) stopped 20-25% above its bound after 9 s at 0.35 and 0.5 (12 layers):
        # a near-optimal solution, from which guided.py makes the plan.
        solver.parameters.linearization_level = 2
        status = solver.solve(self.model)
        if status == cp_model.INFEASIBLE:
            return None
        found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        dropped = frozenset(i for i, lit in enumerate(self.dropped) if found and solver.value(lit))
        remade = tuple(
            sorted({(at, op) for at, op, lit in self.remade if found and solver.value(lit)})
        )
        bound = self.relaxed.problem.seconds(solver.best_objective_bound)
        return _Solved(bound, dropped, remade)


def _worst_steps(relaxed: Relaxation, capacity: int, boundary: int, max_terms: int) -> set[int]:
    """The steps (the last index: the boundary) most over `capacity` if nothing is dropped, as
    many as fit in `max_terms` coefficients."""
    count = len(relaxed.fixed) - 1
    demand, opened = [0] * (count + 1), [0] * (count + 1)
    for gap in relaxed.gaps:
        if gap.before - gap.after > 1:
            demand[gap.after + 1] += gap.size
            demand[gap.before] -= gap.size
            opened[gap.after + 1] += 1
            opened[gap.before] -= 1
    load, width, total, open_ = [], [], 0, 0
    for position in range(count):
        total += demand[position]
        open_ += opened[position]
        load.append(total + relaxed.fixed[position])
        width.append(open_)
    crossing = [gap for gap in relaxed.gaps if gap.spans(boundary)]
    load.append(relaxed.fixed[count] + sum(gap.size for gap in crossing))
    width.append(len(crossing))
    chosen: set[int] = set()
    used = 0
    for position in sorted(range(count + 1), key=lambda i: (-load[i], i)):
        if load[position] <= capacity or used + width[position] > max_terms:
            break
        chosen.add(position)
        used += width[position]
    return chosen


def _terms(
    relaxed: Relaxation, dropped: list[cp_model.IntVar], boundary: int, chosen: set[int]
) -> dict[int, list[tuple[int, cp_model.IntVar]]]:
    """Per chosen step, the droppable gaps open there and their literals."""
    count = len(relaxed.fixed) - 1
    steps = sorted(p for p in chosen if p < count)
    terms: dict[int, list[tuple[int, cp_model.IntVar]]] = {p: [] for p in chosen}
    for gap, literal in zip(relaxed.gaps, dropped):
        low = bisect.bisect_left(steps, gap.after + 1)
        high = bisect.bisect_left(steps, gap.before)
        for position in steps[low:high]:
            terms[position].append((gap.size, literal))
        if count in chosen and gap.spans(boundary):
            terms[count].append((gap.size, literal))
    return terms


def _cost(
    model: cp_model.CpModel, relaxed: Relaxation, dropped: list[cp_model.IntVar]
) -> cp_model.LinearExprT:
    """Each op pays once per production: at least the dropped gaps of any one of its outputs."""
    by_tensor: dict[int, list[cp_model.IntVar]] = {}
    producer_of: dict[int, int] = {}
    for gap, literal in zip(relaxed.gaps, dropped):
        by_tensor.setdefault(gap.tensor, []).append(literal)
        producer_of[gap.tensor] = gap.producer
    runs: dict[int, cp_model.IntVar] = {}
    for tensor, literals in by_tensor.items():
        producer = producer_of[tensor]
        if producer not in runs:
            runs[producer] = model.new_int_var(0, len(relaxed.gaps), "")
        model.add(runs[producer] >= sum(literals))
    return sum(relaxed.problem.cost[p] * var for p, var in runs.items())
