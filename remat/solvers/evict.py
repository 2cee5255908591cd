"""Eviction: a greedy schedule for any graph at a given budget (DTR-like, with lookahead).

Walk the reference order. Before each op, recompute (in reference order) whatever it reads that
is no longer resident; before anything is allocated, evict resident values until it fits,
choosing the value with the least recompute cost per byte and per step until its next use (the
graph is static, so the next use is known: Belady's rule weighted by cost). Values nobody reads
again are freed. The walk counts a value from its production until its eviction, which is never
less than the simulator counts (until its last read), so a walk that fits fits the simulator.

It is the warm start where the lazy family does not apply (graphs without a backward part) and
one more candidate where it does.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from remat.ir import Plan, RematGraph
from remat.solvers._common import fast_plan
from remat.solvers.ilp_problem import Problem, build_problem


class _NoRoom(Exception):
    """Nothing left to evict: the budget is below what this walk can reach."""


@dataclass
class _Walk:
    problem: Problem
    budget: int
    weight: float
    """How much recompute cost counts against distance to the next use (0: pure Belady)."""
    readers: dict[int, list[int]]
    pinned_forever: set[int]
    never: int
    """Next-use distance of a value nobody reads again."""
    dies_after: dict[int, list[int]] = field(default_factory=dict)
    upcoming: dict[int, int] = field(default_factory=dict)
    """Cached next use per tensor (valid while it lies in the future)."""
    weights: dict[int, float] = field(default_factory=dict)
    """Cached recompute-cost weight per tensor."""
    """Position -> resident values whose last read is there (freed after it)."""
    resident: dict[int, int] = field(default_factory=dict)
    """Resident tensor -> its size in memory units."""
    views: dict[int, set[int]] = field(default_factory=dict)
    memory: int = 0
    schedule: list[int] = field(default_factory=list)

    def next_use(self, tensor: int, now: int) -> int:
        cached = self.upcoming.get(tensor)
        if cached is not None and cached > now:
            return cached
        uses = self.readers.get(tensor, ())
        index = bisect.bisect_right(uses, now)
        found = uses[index] if index < len(uses) else self.never
        self.upcoming[tensor] = found
        return found

    def cost(self, tensor: int) -> float:
        """Recompute cost weight: the producer's time, plus one for ops that take no time."""
        producer = self.problem.graph.tensors[tensor].producer
        assert producer is not None
        return (float(self.problem.cost[producer]) + 1.0) ** self.weight

    def evict_until(self, need: int, now: int, pinned: set[int]) -> None:
        while self.memory + need > self.budget:
            best, best_score = None, 0.0
            for tensor, size in self.resident.items():
                if size == 0 or tensor in pinned or tensor in self.pinned_forever:
                    continue
                distance = self.next_use(tensor, now) - now
                score = self.weights[tensor] / (size * distance)
                if best is None or score < best_score:
                    best, best_score = tensor, score
            if best is None:
                raise _NoRoom
            self.drop(best)

    def drop(self, tensor: int) -> None:
        self.memory -= self.resident.pop(tensor, 0)
        for view in self.views.pop(tensor, set()):
            self.resident.pop(view, None)

    def run(self, op_id: int, now: int, pinned: set[int]) -> None:
        problem, graph = self.problem, self.problem.graph
        outputs = graph.ops[op_id].outputs
        need = sum(problem.size[t] for t in outputs) + problem.transient[op_id]
        self.evict_until(need, now, pinned)
        self.schedule.append(op_id)
        for tensor in outputs:
            if tensor not in self.weights:
                self.weights[tensor] = self.cost(tensor)
            self.resident[tensor] = problem.size[tensor]
            self.memory += problem.size[tensor]
            uses = self.readers.get(tensor)
            self.dies_after.setdefault(max(uses[-1], now) if uses else now, []).append(tensor)
            base = graph.storage_of(tensor)
            if base != tensor:
                self.views.setdefault(base, set()).add(tensor)

    def missing(self, needed: tuple[int, ...]) -> list[int]:
        """Ops to recompute, in reference order, so every tensor in `needed` is resident."""
        graph, late = self.problem.graph, set(self.problem.graph.late_inputs)
        pending: set[int] = set()
        stack = list(needed)
        while stack:
            tensor = stack.pop()
            producer = graph.tensors[tensor].producer
            if tensor in self.resident or tensor in late or producer is None:
                continue
            if not graph.ops[producer].recomputable:
                raise _NoRoom  # it was dropped and may not run again: no valid schedule here
            if producer not in pending:
                pending.add(producer)
                stack.extend(self.problem.reads[producer])
        return sorted(pending)

    def free_dead(self, now: int) -> None:
        outputs = self.problem.graph.outputs
        for tensor in self.dies_after.pop(now, ()):
            if tensor in self.resident and tensor not in outputs:
                self.drop(tensor)


def eviction_schedule(
    graph: RematGraph,
    budget: int,
    weight: float = 1.0,
    problem: Problem | None = None,
    deadline: float = math.inf,
) -> tuple[tuple[int, ...], int] | None:
    """The greedy walk's schedule at `budget`, or None if it runs out of room (or time)."""
    problem = problem or build_problem(graph, copies=2, recompute_backward=False)
    readers: dict[int, list[int]] = {}
    for op in graph.ops:
        for tensor in problem.reads[op.id]:
            readers.setdefault(tensor, []).append(op.id)
            producer = graph.tensors[tensor].producer
            if op.recomputable and producer is not None and not graph.ops[producer].recomputable:
                # A value that cannot be remade (an RNG state) lives as long as a
                # recomputation of its reader may come.
                readers[tensor].append(problem.hi[op.id])
    for uses in readers.values():
        uses.sort()
    never = 10 * len(graph.ops)
    walk = _Walk(problem, problem.capacity(budget), weight, readers, _pinned(problem), never)
    boundary_index = len(graph.ops)
    try:
        for op in graph.ops:
            if op.id % 256 == 0 and time.perf_counter() > deadline:
                return None
            if op.id == graph.boundary and graph.boundary < len(graph.ops):
                _cross_boundary(walk, op.id)
                boundary_index = len(walk.schedule)
            pending = walk.missing(problem.reads[op.id])
            wanted = Counter(problem.reads[op.id])
            for producer in pending:
                wanted.update(problem.reads[producer])
            for producer in pending:
                walk.run(producer, op.id, set(wanted))
                wanted.subtract(problem.reads[producer])
                wanted = +wanted
            walk.run(op.id, op.id, set(wanted))
            walk.free_dead(op.id)
    except _NoRoom:
        return None
    return tuple(walk.schedule), boundary_index


def _cross_boundary(walk: _Walk, now: int) -> None:
    graph, problem = walk.problem.graph, walk.problem
    late = sum(problem.size[t] for t in graph.late_inputs)
    caller = problem.backward_reserve
    walk.evict_until(late + problem.reserve + caller, now - 1, set())
    walk.memory += caller
    for tensor in graph.late_inputs:
        walk.resident[tensor] = problem.size[tensor]
        walk.memory += problem.size[tensor]
        uses = walk.readers.get(tensor)
        walk.dies_after.setdefault(max(uses[-1], now) if uses else now, []).append(tensor)
    walk.pinned_forever.update(graph.late_inputs)


def _pinned(problem: Problem) -> set[int]:
    """Tensors the walk never evicts: outputs, and what the model may not recompute."""
    graph = problem.graph
    pinned = set(graph.outputs)
    for op in graph.ops:
        if problem.copies[op.id] == 1 and not op.recomputable:
            pinned.update(op.outputs)
    return pinned


def eviction_plans(graph: RematGraph, budget: int, deadline: float = math.inf) -> list[Plan]:
    """The walk's plans at `budget` for a few cost weights (those that ran to the end)."""
    problem = build_problem(graph, copies=2, recompute_backward=False)
    plans = []
    for weight in (0.5, 1.0, 0.0):
        found = eviction_schedule(graph, budget, weight, problem, deadline)
        if found is not None:
            plan = fast_plan(graph, *found, solver="evict", notes=(f"evict: weight {weight}",))
            plans.append(plan)
    return plans
